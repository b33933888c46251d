"""A saved fast tokenizer read straight from its tokenizer.json, for prediction and training.

``transformers.AutoTokenizer`` imports the framework first (1.9 s of a one-text prediction) to end up
running this same ``tokenizers.Tokenizer``; mtl only needs its token ids, the padding id, the
length limit and, for a run folder, its files. The ids are the ones the transformers tokenizer
gives with ``truncation=True, max_length=N`` (tests/test_startup.py compares them); export, which
saves a tokenizer of its own length, keeps the transformers one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Sequence


class TokenizerFile:
    """Token ids of texts, as ``data.batching.tokenize`` asks the transformers tokenizer for them."""

    def __init__(self, backend, pad_token_id: int | None, truncation_side: str, model_max_length: int | None,
                 folder: Path):
        self.backend = backend
        self.pad_token_id = pad_token_id
        self.truncation_side = truncation_side
        self.model_max_length = model_max_length  # the most tokens the model was trained on, when its files say
        self.folder = folder
        backend.no_padding()

    @property
    def backend_tokenizer(self):  # as transformers' fast tokenizers name it (token_cache's fingerprint reads it)
        return self.backend

    def save_pretrained(self, folder: str) -> None:
        """The files it was read from, into ``folder``: the tokenizer a run folder keeps."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        for name in FILES:
            if (self.folder / name).is_file():
                shutil.copyfile(self.folder / name, Path(folder) / name)

    def __call__(self, texts: Sequence[str], truncation: bool = True, max_length: int | None = None,
                 **_: Any) -> dict[str, list[list[int]]]:
        if truncation and max_length:
            self.backend.enable_truncation(max_length, strategy="longest_first", direction=self.truncation_side)
        else:
            self.backend.no_truncation()
        return {"input_ids": [e.ids for e in self.backend.encode_batch(list(texts), add_special_tokens=True)]}


# tokenizer classes whose ids this file is checked to reproduce; others go through transformers,
# whose wrappers may change a tokenizer's behaviour (a prefix space, special tokens split as text)
CHECKED = ("BertTokenizer", "BertTokenizerFast")
# what transformers reads a saved BERT tokenizer from (a run folder's copy is read again by both)
FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def open_tokenizer_file(folder: Path) -> TokenizerFile | None:
    """The folder's tokenizer.json, or None where it has none (a slow tokenizer), one that cannot be
    read, or one of a class not in CHECKED: the caller then loads transformers' tokenizer."""
    path, settings = folder / "tokenizer.json", folder / "tokenizer_config.json"
    if not (path.is_file() and settings.is_file()):
        return None
    try:
        config = json.loads(settings.read_text(encoding="utf-8"))
        if config.get("tokenizer_class") not in CHECKED or config.get("split_special_tokens"):
            return None
        from tokenizers import Tokenizer

        backend = Tokenizer.from_file(str(path))
    except Exception:  # not readable here: the transformers tokenizer reports what is wrong
        return None
    pad = config.get("pad_token")
    pad = pad.get("content") if isinstance(pad, dict) else pad
    pad_id = backend.token_to_id(pad) if isinstance(pad, str) else None
    side = config.get("truncation_side", "right")
    limit = config.get("model_max_length")
    return TokenizerFile(backend, pad_id, side if side in ("left", "right") else "right",
                         limit if isinstance(limit, int) else None, folder)
