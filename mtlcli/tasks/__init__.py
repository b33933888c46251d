"""What each task column means: its type (``base``: the contract), the built-in types
(``classification``, ``multilabel``, ``regression``, registered like any plugin's), their metrics
(``metrics``), and how a table's columns get their types and become targets (``columns``)."""

from mtlcli.tasks import classification, multilabel, regression  # noqa: F401  (registers the built-ins)
