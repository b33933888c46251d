"""Token ids kept between runs, so a second `mtl train` on the same texts skips tokenizing.

An entry is found by what decides its ids: the texts themselves (which covers the file's contents,
the text column, the validation split and anything else that picks the rows: other texts, another
key), the tokenizer's fingerprint (its vocabulary, normalizer, pre- and post-processing and the
settings that change ids, not the folder it came from) and the max length. What `--max-length auto`
chose is kept as well, by the training texts, the tokenizer, the model's limit and the seed.

Entries are files in ``<runs folder>/.cache/tokens``, written whole or not at all (mtlcli.atomic),
so processes that write the same entry at once each leave a complete file. An entry that does not
read back as what it should hold counts as a miss and is written again. The cache keeps the most
recently used entries: MAX_ENTRIES of them, MAX_BYTES in all.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import zipfile
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from mtlcli import atomic
from mtlcli.data.batching import (AUTO_LENGTH_PERCENTILE, AUTO_LENGTH_SAMPLE, AUTO_LENGTH_STEP, choose_max_length,
                                  tokenize)

FOLDER = Path(".cache") / "tokens"  # under the runs folder; no config.yaml, so nothing lists it as a run
FORMAT = 1  # part of every key: a change in what an entry holds turns the old entries into misses
MAX_ENTRIES = 16  # a run adds one per table it tokenizes (training, validation, test) and one for auto
MAX_BYTES = 1 << 30  # the newest entry is kept even when it alone is larger
STALE_TMP_S = 3600  # a temporary file this old was left by a killed writer, not one still writing
UNREADABLE = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


def texts_digest(texts: Sequence[str]) -> str:
    """SHA-256 of a list of texts: their lengths, then the texts joined (the lengths make the join unambiguous)."""
    digest = hashlib.sha256(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)).tobytes())
    digest.update("\n".join(texts).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """What decides a tokenizer's ids, whatever folder it was loaded from: a fast tokenizer's whole
    pipeline (vocabulary, normalizer, pre-tokenizer, post-processor, added tokens), or the files a
    Python tokenizer saves; with the class and the wrapper settings that change ids."""
    digest = hashlib.sha256(type(tokenizer).__qualname__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        pipeline = json.loads(backend.to_str())
        for per_call in ("truncation", "padding"):  # each call sets these (mtl passes its own max length)
            pipeline.pop(per_call, None)
        digest.update(json.dumps(pipeline, sort_keys=True).encode())
    else:
        with tempfile.TemporaryDirectory() as folder:
            tokenizer.save_pretrained(folder)
            for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
                digest.update(path.name.encode() + b"\0" + path.read_bytes())
    wrapper = {k: getattr(tokenizer, k, None) for k in ("truncation_side", "split_special_tokens", "add_prefix_space")}
    digest.update(json.dumps(wrapper, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def read_entry(path: Path) -> dict[str, np.ndarray] | None:
    """An entry's arrays, or None when it is missing or cannot be read (truncated, not an entry)."""
    try:
        with np.load(path, allow_pickle=False) as entry:
            return {name: entry[name] for name in entry.files}
    except UNREADABLE:
        return None


def write_entry(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """The whole entry under a temporary name, then renamed over ``path``: readers never see half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.replacing(path) as f:
        np.savez(f, **arrays)


def trim(folder: Path) -> None:
    """Keep the most recently used entries (MAX_ENTRIES, MAX_BYTES); drop a killed writer's temporary files."""
    entries = []
    for path in folder.iterdir():
        try:
            stat = path.stat()
        except OSError:  # another process trimmed it a moment ago
            continue
        if atomic.TMP_MARK in path.name:
            if time.time() - stat.st_mtime > STALE_TMP_S:
                path.unlink(missing_ok=True)
        elif path.suffix == ".npz":
            entries.append((stat.st_mtime_ns, stat.st_size, path))
    kept, total = 0, 0
    for _, size, path in sorted(entries, reverse=True):
        if kept and (kept >= MAX_ENTRIES or total + size > MAX_BYTES):
            path.unlink(missing_ok=True)
        else:
            kept, total = kept + 1, total + size


class TokenCache:
    """Tokenizes through the cache in ``folder`` (None: no cache, every text is tokenized).

    Lookups only read; what was tokenized waits in memory until ``save``, which the main process
    calls once the run has started, so a refused run leaves no entry behind.
    """

    def __init__(self, folder: Path | None, tokenizer):
        self.folder, self.tokenizer = folder, tokenizer
        self.fingerprint = tokenizer_fingerprint(tokenizer) if folder is not None else ""
        self.pending: dict[Path, dict[str, np.ndarray]] = {}
        self.texts_cached = self.texts_tokenized = 0
        self.seconds = 0.0

    def tokenize(self, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
        """``batching.tokenize``'s flat ids and lengths, from the cache when it holds them."""
        started = time.perf_counter()
        path = self._path("tokens", texts_digest(texts), max_length) if self.folder is not None and texts else None
        entry = read_entry(path) if path is not None else None
        if entry is not None and _holds_tokens(entry, len(texts), max_length):
            ids, lengths = entry["ids"], entry["lengths"]
            self._used(path)
            self.texts_cached += len(texts)
        else:
            ids, lengths = tokenize(self.tokenizer, texts, max_length)
            if path is not None:
                self.pending[path] = {"ids": ids, "lengths": lengths}
            self.texts_tokenized += len(texts)
        self.seconds += time.perf_counter() - started
        return ids, lengths

    def auto_max_length(self, texts: Sequence[str], limit: int | None, seed: int) -> int:
        """``batching.choose_max_length`` (it tokenizes a sample of the training texts), from the cache when it holds it."""
        started = time.perf_counter()
        path = (self._path("auto", texts_digest(texts), limit, seed, AUTO_LENGTH_SAMPLE, AUTO_LENGTH_PERCENTILE,
                           AUTO_LENGTH_STEP) if self.folder is not None else None)
        entry = read_entry(path) if path is not None else None
        if entry is not None and _holds_length(entry, limit):
            chosen = int(entry["max_length"])
            self._used(path)
        else:
            chosen = choose_max_length(self.tokenizer, texts, limit, seed)
            if path is not None:
                self.pending[path] = {"max_length": np.int64(chosen)}
        self.seconds += time.perf_counter() - started
        return chosen

    def save(self) -> str | None:
        """Write what this run tokenized, then trim the cache; returns why it could not, if it could not."""
        try:
            for path, arrays in self.pending.items():
                write_entry(path, arrays)
            if self.pending:
                trim(self.folder)
        except OSError as exc:
            return f"{self.folder}: cannot keep the tokens for the next run ({exc.strerror or exc})"
        finally:
            self.pending.clear()
        return None

    def summary(self) -> dict[str, object]:
        """What the first lines of `mtl train` say about the tokens."""
        return {"cached": self.texts_cached, "tokenized": self.texts_tokenized, "seconds": round(self.seconds, 2),
                "cache": str(self.folder) if self.folder is not None else None}

    def _path(self, kind: str, *parts: object) -> Path:
        key = hashlib.sha256(json.dumps([FORMAT, kind, self.fingerprint, *parts]).encode()).hexdigest()[:40]
        return self.folder / f"{kind}-{key}.npz"

    @staticmethod
    def _used(path: Path) -> None:
        try:
            os.utime(path)  # the most recently used entries are the ones trim keeps
        except OSError:
            pass


def _holds_tokens(entry: dict[str, np.ndarray], rows: int, max_length: int) -> bool:
    ids, lengths = entry.get("ids"), entry.get("lengths")
    return (ids is not None and lengths is not None and ids.dtype == np.int32 and lengths.dtype == np.int64
            and ids.ndim == 1 and lengths.shape == (rows,) and int(lengths.sum()) == len(ids)
            and (rows == 0 or 0 <= int(lengths.min()) and int(lengths.max()) <= max_length))


def _holds_length(entry: dict[str, np.ndarray], limit: int | None) -> bool:
    value = entry.get("max_length")
    return (value is not None and value.shape == () and value.dtype == np.int64
            and AUTO_LENGTH_STEP <= int(value) <= max(limit or 512, AUTO_LENGTH_STEP))
