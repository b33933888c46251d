from mtlcli.cli.app import main

main()
