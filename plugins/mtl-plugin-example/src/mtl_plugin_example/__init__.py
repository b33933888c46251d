"""Example mtlcli plugin: one component of each kind, declared as entry points in pyproject.toml.

Nothing is registered on import; mtlcli finds the components through the entry points and imports
a module only when a run or `mtl plugins` asks for it.
"""

__version__ = "0.1.0"
