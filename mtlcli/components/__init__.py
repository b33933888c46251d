"""Built-in components. Importing this package registers them in mtlcli.registry."""

from mtlcli.components import combiners, heads, poolers, schedulers  # noqa: F401
