"""Micro-batching: the texts of requests that arrive together go through the model in one call.

The first waiting request opens a batch; requests arriving within ``max_wait`` seconds join it,
up to ``batch_size`` texts. The model runs in one worker thread, so the event loop keeps
accepting and parsing requests while a batch computes, and the next batch fills meanwhile.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np


class MicroBatcher:
    def __init__(self, model: Any, batch_size: int = 64, max_wait: float = 0.005,
                 on_batch: Callable[[int], None] | None = None):
        self.model, self.batch_size, self.max_wait = model, batch_size, max_wait
        self.on_batch = on_batch  # told the number of texts of each forward pass that succeeded
        self.queue: asyncio.Queue | None = None
        self.worker: asyncio.Task | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mtl-model")

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            await asyncio.gather(self.worker, return_exceptions=True)
        self.executor.shutdown(wait=True)

    async def predict(self, texts: list[str]) -> tuple[dict[str, np.ndarray], int]:
        """Task -> probabilities for ``texts``, and how many texts went through the model with them."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            n = len(items[0][0])
            deadline = loop.time() + self.max_wait
            while n < self.batch_size:
                try:
                    item = self.queue.get_nowait()
                except asyncio.QueueEmpty:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self.queue.get(), left)
                    except asyncio.TimeoutError:
                        break
                items.append(item)
                n += len(item[0])
            texts = [t for batch_texts, _ in items for t in batch_texts]
            try:
                probs = await loop.run_in_executor(self.executor, self.model.probs, texts, self.batch_size)
            except Exception as exc:  # the model failed: every request of this batch gets the error
                for _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                continue
            if self.on_batch is not None:
                self.on_batch(len(texts))
            start = 0
            for batch_texts, future in items:
                end = start + len(batch_texts)
                if not future.done():  # a client that went away leaves a cancelled future
                    future.set_result(({t: p[start:end] for t, p in probs.items()}, len(texts)))
                start = end
