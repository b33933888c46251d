"""Built-in components. Importing this package registers them in mtlcli.registry."""

from mtlcli.components import combiners, heads, mlflow_tracker, poolers, schedulers, trackers  # noqa: F401
