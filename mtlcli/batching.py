"""Token ids, not text: tokenize once up front, then batch examples of similar length together.

Sorting by length inside large shuffled pools keeps padding small (every batch is padded only to
its own longest row) while the order stays random from epoch to epoch and reproducible per seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

TOKENIZE_CHUNK = 2048  # rows per call to the fast tokenizer
POOL_BATCHES = 50  # a pool holds this many batches' worth of rows before it is sorted by length


@dataclass
class Encoded:
    """A tokenized table: token ids per row and label ids per task (MISSING where unlabelled)."""

    input_ids: list[list[int]]
    labels: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int64, count=len(self.input_ids))


def tokenize(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    ids: list[list[int]] = []
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        chunk = list(texts[start : start + TOKENIZE_CHUNK])
        ids += tokenizer(chunk, truncation=True, max_length=max_length)["input_ids"]
    return ids


def encode(tokenizer, texts: Sequence[str], labels: dict[str, list[int]], max_length: int) -> Encoded:
    return Encoded(tokenize(tokenizer, texts, max_length), {t: np.asarray(v, dtype=np.int64) for t, v in labels.items()})


@dataclass
class Batch:
    index: torch.Tensor  # rows of the dataset, to put results back in input order
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return len(self.index)

    def to(self, device: torch.device) -> "Batch":
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return Batch(self.index, move(self.input_ids), move(self.attention_mask), {k: move(v) for k, v in self.labels.items()})


def collate(data: Encoded, index: np.ndarray, pad_id: int) -> Batch:
    rows = [data.input_ids[i] for i in index]
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for j, r in enumerate(rows):
        ids[j, : len(r)] = r
        mask[j, : len(r)] = 1
    labels = {t: torch.from_numpy(v[index]) for t, v in data.labels.items()}
    return Batch(torch.from_numpy(np.asarray(index)), torch.from_numpy(ids), torch.from_numpy(mask), labels)


def train_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """This epoch's batches: shuffle, sort by length within pools, cut, shuffle the batches.

    Depends only on (seed, epoch), so a resumed run sees the same order.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    pool = batch_size * POOL_BATCHES
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Inference batches: all rows sorted by length; callers put results back by ``Batch.index``."""
    order = np.argsort(lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def iterate(data: Encoded, batches: list[np.ndarray], pad_id: int) -> Iterator[Batch]:
    for index in batches:
        yield collate(data, index, pad_id)
