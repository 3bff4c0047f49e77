"""Dynamic micro-batching: concurrent requests share one forward pass.

Requests put their texts in a queue and await a future. One worker task takes the first waiting request, then
collects more for at most `max_wait_ms` (or until `max_batch` texts), runs one forward pass in a worker thread (so
the event loop keeps accepting and parsing requests meanwhile) and hands each request its rows. While a pass runs,
new requests pile up, so under load batches fill without waiting; a lone request pays at most the wait window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

Infer = Callable[[list[str]], np.ndarray]


class Overloaded(RuntimeError):
    """More texts are waiting than the queue allows: the client should retry later (HTTP 503)."""


class Stopped(RuntimeError):
    """The batcher stopped before this request was answered (server shutting down)."""


@dataclass
class _Job:
    texts: Sequence[str]
    future: asyncio.Future[np.ndarray]


@dataclass
class BatchStats:
    requests: int = 0
    texts: int = 0
    batches: int = 0
    largest_batch: int = 0
    busy_seconds: float = 0.0
    rejected_overloaded: int = 0
    histogram: dict[int, int] = field(default_factory=dict)  # texts per forward pass -> passes

    def to_dict(self) -> dict[str, Any]:
        mean = self.texts / self.batches if self.batches else 0.0
        return {"requests": self.requests, "texts": self.texts, "batches": self.batches,
                "mean_batch": round(mean, 2), "largest_batch": self.largest_batch,
                "busy_seconds": round(self.busy_seconds, 3), "rejected_overloaded": self.rejected_overloaded,
                "batch_sizes": {str(k): v for k, v in sorted(self.histogram.items())}}


class MicroBatcher:
    def __init__(self, infer: Infer, *, max_batch: int = 32, max_wait_ms: float = 2.0, max_queue: int = 2048):
        self.infer = infer
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.stats = BatchStats()
        self._pending: deque[_Job] = deque()
        self._batch: list[_Job] = []  # taken from the queue, not yet answered (being collected or computed)
        self._waiting = 0  # texts queued or in a running pass
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        # One thread: passes run one at a time (the model's own intra-op threads do the parallel work).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tinylm-infer")

    @property
    def waiting(self) -> int:
        return self._waiting

    async def start(self) -> None:
        self._arrived = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="tinylm-batcher")

    async def stop(self) -> None:
        unanswered = [*self._batch, *self._pending]
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for job in unanswered:
            if not job.future.done():
                job.future.set_exception(Stopped("server is shutting down"))
        self._pending.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities for `texts`, [len(texts), C], computed in some shared forward pass."""
        if self._task is None or self._arrived is None:
            raise Stopped("the batcher is not running")
        if self._waiting + len(texts) > self.max_queue:
            self.stats.rejected_overloaded += 1
            raise Overloaded(f"{self._waiting} texts are waiting (limit {self.max_queue}); retry shortly")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._waiting += len(texts)
        self._pending.append(_Job(texts, future))
        self._arrived.set()
        try:
            return await future
        finally:
            self._waiting -= len(texts)

    async def _run(self) -> None:
        while True:
            await self._collect()
            try:
                await self._answer()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # a failed pass fails its requests, never the worker
                log.exception("forward pass failed")
                for job in self._batch:
                    if not job.future.done():
                        job.future.set_exception(err)
            self._batch = []

    def _take(self, count: int) -> int:
        """Move waiting jobs into the batch while they fit (a request larger than max_batch goes alone)."""
        while self._pending:
            job = self._pending[0]
            if count and count + len(job.texts) > self.max_batch:
                break
            self._pending.popleft()
            if job.future.done():  # the client went away while waiting
                continue
            self._batch.append(job)
            count += len(job.texts)
        return count

    async def _wait_for_arrival(self, timeout: float | None) -> bool:
        assert self._arrived is not None
        self._arrived.clear()
        if self._pending:
            return True
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout)  # cancelling an Event wait loses nothing
        except TimeoutError:
            return False
        return True

    def _next_fits(self, count: int) -> bool:
        return not self._pending or count + len(self._pending[0].texts) <= self.max_batch

    async def _collect(self) -> None:
        """Fill self._batch: wait for a first request, then for more until the window closes or the batch is full."""
        count = 0
        while not self._batch:
            if not self._pending:
                await self._wait_for_arrival(None)
            count = self._take(0)
        deadline = time.monotonic() + self.max_wait
        while count < self.max_batch and self._next_fits(count):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not await self._wait_for_arrival(remaining):
                break
            count = self._take(count)

    async def _answer(self) -> None:
        jobs = self._batch
        texts = [t for job in jobs for t in job.texts]
        started = time.perf_counter()
        probs = await asyncio.get_running_loop().run_in_executor(self._executor, self.infer, texts)
        self.stats.busy_seconds += time.perf_counter() - started
        self.stats.requests += len(jobs)
        self.stats.texts += len(texts)
        self.stats.batches += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(texts))
        self.stats.histogram[len(texts)] = self.stats.histogram.get(len(texts), 0) + 1
        start = 0
        for job in jobs:
            rows = probs[start:start + len(job.texts)]
            start += len(job.texts)
            if not job.future.done():
                job.future.set_result(rows)
