"""A saved fast tokenizer read straight from its tokenizer.json, for prediction.

``transformers.AutoTokenizer`` imports the framework first (1.9 s of a one-text prediction) to end up
running this same ``tokenizers.Tokenizer``; prediction only needs its token ids and the padding
id. The ids are the ones the transformers tokenizer gives with ``truncation=True, max_length=N``
(tests/test_startup.py compares them); training, which fingerprints and saves its tokenizer, and
export, which saves it, keep the transformers one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence


class TokenizerFile:
    """Token ids of texts, as ``data.batching.tokenize`` asks the transformers tokenizer for them."""

    def __init__(self, backend, pad_token_id: int | None, truncation_side: str):
        self.backend = backend
        self.pad_token_id = pad_token_id
        self.truncation_side = truncation_side
        backend.no_padding()

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
    return TokenizerFile(backend, pad_id, side if side in ("left", "right") else "right")
