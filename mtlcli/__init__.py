"""mtl: multi-task fine-tuning of sentence transformers from a CSV."""

__version__ = "0.1.0"
