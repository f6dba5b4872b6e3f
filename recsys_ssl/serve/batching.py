"""Request batching for retrieval: one query-tower call and one ScaNN search per batch.

Requests queue on the event loop; one compute thread answers them a batch at a time. While a
batch runs, new requests queue, and the next batch takes them all (up to ``max_queries``
queries): under load the per-call overhead is shared, and when idle a request waits only for
``max_wait_s`` (default 0: no wait at all). No thread per connection: the event loop parses
and validates, the compute thread only runs TensorFlow and ScaNN (both release the GIL).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from recsys_ssl.retrieve import Retriever


@dataclasses.dataclass
class _Pending:
    retriever: Retriever
    rows: list[dict]
    k: int
    future: asyncio.Future


class Batcher:
    """``await batcher.retrieve(retriever, rows, k)`` -> (ids, scores) of those rows.

    observe(queries, seconds) is called once per batch (metrics).
    """

    def __init__(
        self,
        max_queries: int = 256,
        max_wait_s: float = 0.0,
        observe: Callable[[int, float], None] | None = None,
        concurrency: int = 1,
    ):
        self.max_queries = max(int(max_queries), 1)
        self.max_wait_s = max(float(max_wait_s), 0.0)
        self.observe = observe or (lambda queries, seconds: None)
        self.concurrency = max(int(concurrency), 1)
        self._queue: collections.deque[_Pending] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="retrieval-batch")

    async def retrieve(self, retriever: Retriever, rows: list[dict], k: int):
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():  # started lazily, on the server's own loop
            self._wake, self._slots = asyncio.Event(), asyncio.Semaphore(self.concurrency)
            self._worker = loop.create_task(self._run())
        pending = _Pending(retriever, rows, k, loop.create_future())
        self._queue.append(pending)
        self._wake.set()
        return await pending.future

    def _take(self) -> list[_Pending]:
        batch, size = [], 0
        while self._queue and (not batch or size + len(self._queue[0].rows) <= self.max_queries):
            batch.append(self._queue.popleft())
            size += len(batch[-1].rows)
        return batch

    async def _run(self) -> None:
        """Takes a batch whenever requests wait and a compute slot is free (``concurrency`` slots)."""
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            await self._slots.acquire()
            if self.max_wait_s and sum(len(p.rows) for p in self._queue) < self.max_queries:
                await asyncio.sleep(self.max_wait_s)  # let a partial batch fill
            batch = [p for p in self._take() if not p.future.cancelled()]  # cancelled: the client went away
            if not self._queue:
                self._wake.clear()
            if not batch:
                self._slots.release()
                continue
            # A version swap can put two retrievers in one batch: each gets its own call.
            groups = [
                [p for p in batch if p.retriever is r] for r in {id(p.retriever): p.retriever for p in batch}.values()
            ]
            try:
                self._executor.submit(self._compute_groups, loop, groups)
            except RuntimeError:  # closed meanwhile
                self._slots.release()
                raise

    def _compute_groups(self, loop: asyncio.AbstractEventLoop, groups: list[list[_Pending]]) -> None:
        """On the compute thread: each group's results, handed back to the loop in one callback
        (no asyncio future or task per batch: their hand-offs cost the loop more than the batch's
        own Python)."""
        answered = []
        for group in groups:
            start = time.perf_counter()
            try:
                results = _compute(group[0].retriever, group)
            except Exception as error:  # handed to each waiting request (an internal error)
                results = [error] * len(group)
            answered.append((group, results, time.perf_counter() - start))
        try:
            loop.call_soon_threadsafe(self._deliver, answered)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    def _deliver(self, answered: list[tuple[list[_Pending], list, float]]) -> None:
        """On the loop: each request's result (or error), then the compute slot back."""
        try:
            for group, results, seconds in answered:
                self.observe(sum(len(p.rows) for p in group), seconds)
                for p, result in zip(group, results):
                    if not p.future.done():
                        if isinstance(result, Exception):
                            p.future.set_exception(result)
                        else:
                            p.future.set_result(result)
        finally:
            self._slots.release()

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)


def _compute(retriever: Retriever, group: list[_Pending]) -> list[tuple]:
    """Runs on the compute thread: one query-tower call and one ScaNN search for the whole group."""
    # The top-k of a larger k' starts with the top-k (same candidates, exact re-scoring).
    ids, scores = retriever.retrieve([r for p in group for r in p.rows], max(p.k for p in group))
    out, start = [], 0
    for p in group:
        stop = start + len(p.rows)
        out.append(([i[: p.k] for i in ids[start:stop]], [s[: p.k] for s in scores[start:stop]]))
        start = stop
    return out
