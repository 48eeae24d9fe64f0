"""The queue and the one worker thread that runs the network: requests whose settings agree share network
calls (dynamic batching), the queue is bounded (429 beyond it), and a request whose client left is dropped.

A :class:`Job` carries a piece of work (``key``, ``rows``, ``run(group, step)``) between the asyncio side
(the HTTP handlers) and the worker thread. Jobs with equal, non-None keys are run together, head first, up to
``max_batch`` rows; per-sample determinism (:func:`undiffuse.samplers.driver.drive` with one seed per row) makes
each job's rows exactly what they would be alone.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from typing import Any, Callable, Hashable, Optional, Protocol

from undiffuse.serve.limits import Busy, Cancelled, Limits

__all__ = ["Work", "Job", "Batcher"]


class Work(Protocol):
    key: Optional[Hashable]  # equal keys may share network calls; None: always alone
    rows: int

    def run(self, group: list["Job"], step: Callable[[dict], None]) -> list[Any]: ...


class Job:
    """One request in flight: its work, its events (progress, previews) and its result, handed from the
    worker thread to the request's event loop."""

    def __init__(self, work: Work, loop: asyncio.AbstractEventLoop, previews: bool = False) -> None:
        self.work, self.loop, self.previews = work, loop, previews
        self.events: asyncio.Queue = asyncio.Queue()
        self.future: asyncio.Future = loop.create_future()
        self.cancelled = threading.Event()
        self.shared_with = 0  # other jobs in its batch

    def _call(self, fn: Callable, *args: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: the server is stopping
            pass

    def emit(self, event: tuple) -> None:
        """Progress and previews, for a streaming request only (a plain one waits for its result)."""
        if self.previews and not self.cancelled.is_set():
            self._call(self.events.put_nowait, event)

    def _settle(self, result: Any, error: Optional[BaseException]) -> None:
        if not self.future.done():
            if error is not None and self.cancelled.is_set():
                self.future.cancel()  # nobody waits for it any more
            elif error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)
            self.events.put_nowait(("done",))

    def finish(self, result: Any) -> None:
        self._call(self._settle, result, None)

    def fail(self, error: BaseException) -> None:
        self._call(self._settle, None, error)

    def cancel(self) -> None:
        self.cancelled.set()


class Batcher:
    """The bounded queue and its worker thread (start / stop; ``stats`` for the health endpoint)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._pending: deque[Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self.running = 0
        self.stats = {"requests": 0, "batches": 0, "shared_batches": 0, "rows": 0, "failed": 0, "cancelled": 0}
        self._thread = threading.Thread(target=self._loop, name="undiffuse-serve-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            for job in self._pending:
                job.fail(Cancelled("the server is stopping — send the request again when it is back", status=503))
            self._pending.clear()
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def queued(self) -> int:
        return len(self._pending)

    def submit(self, job: Job) -> None:
        """Queue ``job``, or refuse it with 429 when ``limits.queue`` requests are already waiting."""
        with self._cond:
            if self._stopping:
                raise Cancelled("the server is stopping — send the request again when it is back", status=503)
            if len(self._pending) >= self.limits.queue:
                raise Busy(f"the queue is full ({self.limits.queue} requests waiting) — retry in a moment")
            self._pending.append(job)
            self.stats["requests"] += 1
            self._cond.notify()

    def _take(self) -> Optional[list[Job]]:
        """The next group: the oldest live job and the queued jobs with its key, up to max_batch rows."""
        with self._cond:
            while True:
                while self._pending and self._pending[0].cancelled.is_set():
                    self._pending.popleft()
                    self.stats["cancelled"] += 1
                if self._pending or self._stopping:
                    break
                self._cond.wait(0.5)
            if self._stopping:
                return None
            head = self._pending.popleft()
            group, rows = [head], head.work.rows
            if head.work.key is not None:
                for job in list(self._pending):
                    if job.work.key == head.work.key and not job.cancelled.is_set() and rows + job.work.rows <= self.limits.max_batch:
                        self._pending.remove(job)
                        group.append(job)
                        rows += job.work.rows
            self.running = rows
            return group

    def _loop(self) -> None:
        while True:
            group = self._take()
            if group is None:
                return
            try:
                self._run(group)
            finally:
                self.running = 0

    def _run(self, group: list[Job]) -> None:
        def step(_: dict) -> None:  # called by the work between steps: stop when every client has left
            if all(j.cancelled.is_set() for j in group):
                raise Cancelled("every client of this batch went away")

        for job in group:
            job.shared_with = len(group) - 1
        self.stats["batches"] += 1
        self.stats["shared_batches"] += len(group) > 1
        self.stats["rows"] += sum(j.work.rows for j in group)
        t0 = time.perf_counter()
        try:
            results = group[0].work.run(group, step)
        except Exception as e:  # one model's or request's failure answers its requests, never stops the worker
            self.stats["cancelled" if isinstance(e, Cancelled) else "failed"] += len(group)
            for job in group:
                job.fail(e)
            return
        self.stats["busy_s"] = self.stats.get("busy_s", 0.0) + time.perf_counter() - t0
        for job, result in zip(group, results):
            job.finish(result)
