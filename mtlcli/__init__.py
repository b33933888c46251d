"""mtl: multi-task fine-tuning of sentence transformers from a CSV.

``from mtlcli import Model`` is the Python API (see ``mtlcli.api``); it is imported on first use so
that the command line starts without loading torch.
"""

__version__ = "0.1.0"
__all__ = ["Model", "__version__"]


def __getattr__(name: str):
    if name == "Model":
        from mtlcli.api import Model

        return Model
    raise AttributeError(f"module 'mtlcli' has no attribute {name!r}")
