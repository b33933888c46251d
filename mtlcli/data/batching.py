"""Token ids, not text: tokenize once up front, then batch examples of similar length together.

Every row's token ids live in one flat int32 array with an offset per row (4 bytes a token, where
Python lists of ints take about 36). A batch is gathered from it on the device it runs on, so the
ids travel to a GPU once, not once per step.

Training sorts by length inside large shuffled pools (little padding, a random order per epoch,
reproducible per seed). Inference (validation, eval, predict) sorts all rows by length and gives a
batch only rows of one padded width, so a text's padding never depends on which texts share its
batch (its scores still may, in the last bits of a matrix product's rounding). Widths are rounded up to a multiple chosen per device, so a GPU sees a bounded set of
shapes: some attention kernels pay for every new shape.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

if TYPE_CHECKING:  # imported where batches become tensors: ONNX Runtime takes numpy arrays (host_batch)
    import torch

TOKENIZE_CHUNK = 8192  # rows per call to the fast tokenizer (it spreads a call over all cores)
POOL_BATCHES = 50  # a pool holds this many batches' worth of rows before it is sorted by length
AUTO_LENGTH_SAMPLE = 20_000  # training texts measured to choose --max-length auto
AUTO_LENGTH_PERCENTILE = 95  # auto: this share of the training texts fits without truncation
AUTO_LENGTH_STEP = 8  # auto rounds up to a multiple of this


def inference_batch_size(device: torch.device) -> int:
    """Rows per batch for validation, eval and predict alike, so the three agree row for row;
    larger on a GPU, where a small batch leaves most of it idle."""
    return 256 if device.type == "cuda" else 64


def width_multiple(device: torch.device, precision: str = "fp32") -> int:
    """Pad batches to a multiple of this many tokens: 16 on a GPU (a bounded set of shapes); 8 on a
    CPU in bf16 or int8, whose oneDNN kernels are made and kept per shape (with every width its
    own, a 6,000-review epoch kept adding about 7 MB a step: 1.3 GB by its end); 1 on a CPU in
    fp32, which keeps nothing per shape, where every padding token is only paid for."""
    if device.type == "cuda":
        return 16
    return 1 if precision == "fp32" else 8


@dataclass
class Encoded:
    """A tokenized table: token ids of every row in one flat array, and label ids per task (MISSING where unlabelled)."""

    ids: np.ndarray  # int32, row i is ids[offsets[i] : offsets[i] + lengths[i]]
    offsets: np.ndarray  # int64
    lengths: np.ndarray  # int64, on the host: batches are planned without touching the device
    labels: dict[str, np.ndarray]
    _on: dict = field(default_factory=dict, repr=False, compare=False)  # device -> tensors, moved once

    def __len__(self) -> int:
        return len(self.lengths)

    def row(self, i: int) -> list[int]:
        return self.ids[self.offsets[i] : self.offsets[i] + self.lengths[i]].tolist()

    def tensors(self, device: torch.device) -> dict[str, torch.Tensor]:
        import torch

        key = str(device)
        if key not in self._on:
            move = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
            self._on[key] = {"ids": move(self.ids), "offsets": move(self.offsets), "lengths": move(self.lengths),
                             **{f"label:{t}": move(v) for t, v in self.labels.items()}}
        return self._on[key]


def tokenize(tokenizer, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat int32 token ids and the length of each row."""
    ids, lengths = [np.zeros(0, dtype=np.int32)], [np.zeros(0, dtype=np.int64)]
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        chunk = list(texts[start : start + TOKENIZE_CHUNK])
        # plain lists, not return_tensors: transformers pads and converts those in Python, which
        # took longer than tokenizing (5.2 s against 2.9 s for 22,502 reviews on 2 cores)
        rows = tokenizer(chunk, truncation=True, max_length=max_length, return_attention_mask=False,
                         return_token_type_ids=False)["input_ids"]
        n = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        ids.append(np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32, count=int(n.sum())))
        lengths.append(n)
    return np.concatenate(ids), np.concatenate(lengths)


def encode(tokenizer, texts: Sequence[str], labels: dict[str, np.ndarray | list[int]], max_length: int) -> Encoded:
    return from_tokens(*tokenize(tokenizer, texts, max_length), labels)


def from_tokens(ids: np.ndarray, lengths: np.ndarray, labels: dict[str, np.ndarray | list[int]]) -> Encoded:
    """An Encoded from ``tokenize``'s output (or the same arrays read back from the token cache)."""
    offsets = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    # class ids stay int64 (what cross-entropy takes); a task type's float targets stay float32
    return Encoded(ids, offsets, lengths, {t: np.asarray(v, dtype=np.float32 if np.asarray(v).dtype.kind == "f"
                                                        else np.int64) for t, v in labels.items()})


def model_length_limit(tokenizer, backbone) -> int | None:
    """The most tokens the model reads: its position embeddings and its tokenizer's limit."""
    limits = [n for n in (getattr(tokenizer, "model_max_length", None),
                          getattr(backbone.config, "max_position_embeddings", None))
              if isinstance(n, int) and 0 < n < 1_000_000]  # tokenizers without a limit say 1e30
    return min(limits) if limits else None


def choose_max_length(tokenizer, texts: Sequence[str], limit: int | None, seed: int) -> int:
    """--max-length auto: the length that 95% of (a sample of) the training texts fit in whole,
    rounded up to a multiple of 8, at most the model's limit."""
    cap = limit or 512
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(texts), size=min(len(texts), AUTO_LENGTH_SAMPLE), replace=False) if texts else []
    _, lengths = tokenize(tokenizer, [texts[i] for i in sorted(sample)], cap)
    if not len(lengths):
        return min(cap, 128)
    wanted = math.ceil(np.percentile(lengths, AUTO_LENGTH_PERCENTILE))
    return int(min(cap, max(AUTO_LENGTH_STEP, -(-wanted // AUTO_LENGTH_STEP) * AUTO_LENGTH_STEP)))


@dataclass
class Batch:
    index: torch.Tensor  # rows of the dataset (on the host), to put results back in input order
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return len(self.index)


def padded_width(longest: int, multiple: int, cap: int) -> int:
    return min(-(-longest // multiple) * multiple, max(cap, longest))


def collate(data: Encoded, index: np.ndarray, pad_id: int, device: torch.device, multiple: int = 1,
            cap: int = 1 << 30) -> Batch:
    """The rows ``index`` as one padded batch, gathered on ``device`` from the ids already there."""
    import torch

    on = data.tensors(device)
    width = padded_width(int(data.lengths[index].max()), multiple, cap)
    rows = torch.from_numpy(np.asarray(index, dtype=np.int64))
    if device.type == "cuda":  # from pinned memory the copy is asynchronous: no sync per step
        rows_dev = rows.pin_memory().to(device, non_blocking=True)
    else:
        rows_dev = rows.to(device)
    positions = torch.arange(width, device=device)
    mask = positions < on["lengths"][rows_dev, None]
    where = (on["offsets"][rows_dev, None] + positions).clamp_max(max(len(data.ids) - 1, 0))
    ids = on["ids"][where].long().masked_fill_(~mask, pad_id)
    labels = {t: on[f"label:{t}"][rows_dev] for t in data.labels}
    return Batch(rows, ids, mask.long(), labels)


def host_batch(data: Encoded, index: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows ``index`` as int64 token ids and attention mask in numpy, the values ``collate`` gives
    on a CPU (padded to the longest row): for ONNX Runtime, which takes host arrays and no torch."""
    lengths = data.lengths[index]
    positions = np.arange(int(lengths.max()))
    mask = positions < lengths[:, None]
    where = np.minimum(data.offsets[index, None] + positions, max(len(data.ids) - 1, 0))
    return np.where(mask, data.ids[where], pad_id).astype(np.int64), mask.astype(np.int64)


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


def sorted_batches(lengths: np.ndarray, batch_size: int, multiple: int = 1, cap: int = 1 << 30) -> list[np.ndarray]:
    """Inference batches: rows sorted by length, each batch holding rows of one padded width only,
    so a row's padding depends on its own length, never on its neighbours'.
    Callers put results back by ``Batch.index``.

    Widest batches first: each batch's tensors then fit in blocks the wider batches before it freed;
    in the other order every batch needs larger blocks than any freed, and a CPU process only grows.
    """
    order = np.argsort(lengths, kind="stable")
    widths = np.minimum(-(-lengths[order] // multiple) * multiple, np.maximum(cap, lengths[order]))
    cuts = np.flatnonzero(np.diff(widths)) + 1
    batches = [group[i : i + batch_size] for group in np.split(order, cuts) for i in range(0, len(group), batch_size)]
    return batches[::-1]


def iterate(data: Encoded, batches: list[np.ndarray], pad_id: int, device: torch.device, multiple: int = 1,
            cap: int = 1 << 30) -> Iterator[Batch]:
    for index in batches:
        yield collate(data, index, pad_id, device, multiple, cap)
