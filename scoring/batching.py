"""Dynamic batching for entry scripts: requests that arrive together share one model call.

    from scoring.batching import Batcher

    def init():
        global batcher
        batcher = Batcher(predict_many, max_batch_size=32, max_wait_ms=50)

    def run(request):
        probabilities = batcher.submit(decoded_input)  # blocks this server thread until its call is done

`predict_many(items)` takes a list and returns one result per item, in the same order (a list, or an array
whose rows are the results). The server must answer requests on several threads (Lynx's replicas do), so that
several of them can wait in `submit()` at once; one background thread makes the model calls.

When the model becomes free the batcher takes what is queued, and waits for more only as long as it has
reason to expect more: up to the number of requests it recently saw in flight at once. A lone client
therefore never waits, and sixteen clients that come back within a millisecond of each other are scored
together as soon as the sixteenth has arrived.

How long it waits scales with the model: a wait idles the model, so it is worth at most a small share of a
call. The batcher waits up to a tenth of its longest recent call (WAIT_SHARE), at least 5 ms (MIN_WAIT_MS),
and never more than `max_wait_ms`. With the default 50 ms that is 5 ms for a call of a few milliseconds (a
GPU, a small model) and up to 50 ms for a call of half a second (ResNet-50 on two CPU cores, where the
answers of one call take longer than 5 ms to come back as the next requests). With `max_batch_size=1`
there is no thread and no wait: `submit()` calls the model in the caller's thread.

Each request gets its own result or its own exception: when a call fails, the batch is split in halves and
each half is retried, down to single items, so one bad input fails alone.

Standard library only, so the file can be shipped next to an entry script (on Azure ML, as `batching.py`
in the entry script's source directory).
"""

from __future__ import annotations  # Azure images may run Python 3.9

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

__all__ = ["BatchInfo", "Batcher", "BatchSizeError"]

# How many recent model calls the "how many requests to expect" and "how long a call takes" estimates
# look back over.
RECENT_CALLS = 8
# A wait for more requests lasts at most this share of the longest recent model call...
WAIT_SHARE = 0.1
# ...but at least this long (when max_wait_ms allows): requests need a few milliseconds to come back.
MIN_WAIT_MS = 5.0


class BatchSizeError(RuntimeError):
    """predict_many returned a different number of results than it was given items."""


class BatchInfo(NamedTuple):
    size: int  # the number of items in the model call that produced this result
    queued_ms: float  # from submit() to the start of that call
    call_ms: float  # the call itself


class _Ticket:
    __slots__ = ("item", "arrived", "done", "result", "error", "info")

    def __init__(self, item: Any) -> None:
        self.item = item
        self.arrived = time.monotonic()
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.info: BatchInfo | None = None


class Batcher:
    """Thread-safe: any number of threads may call submit() at once."""

    def __init__(
        self,
        predict_many: Callable[[list], Sequence[Any]],
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 50.0,
        name: str = "batcher",
    ) -> None:
        if int(max_batch_size) < 1:
            raise ValueError(f"max_batch_size must be at least 1, not {max_batch_size!r}")
        if float(max_wait_ms) < 0:
            raise ValueError(f"max_wait_ms must not be negative, not {max_wait_ms!r}")
        self.predict_many = predict_many
        self.max_batch_size = int(max_batch_size)
        self.max_wait_s = float(max_wait_ms) / 1000.0
        self._cond = threading.Condition()
        self._queue: deque[_Ticket] = deque()
        self._closed = False
        self._in_flight = 0  # submitted, not yet answered (queued or in the running call)
        self._peak = 0  # the most in flight at once since the last call started
        self._recent_peaks: deque[int] = deque([1], maxlen=RECENT_CALLS)
        self._recent_call_s: deque[float] = deque(maxlen=RECENT_CALLS)  # durations of recent model calls
        self._calls = 0
        self._items = 0
        self._failed_items = 0
        self._thread: threading.Thread | None = None
        if self.max_batch_size > 1:
            self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
            self._thread.start()

    # ---- callers -------------------------------------------------------------------------------------------

    def submit(self, item: Any, timeout: float | None = None) -> Any:
        """The result for `item`, or the exception its call raised. TimeoutError after `timeout` seconds."""
        return self.submit_with_info(item, timeout)[0]

    def submit_with_info(self, item: Any, timeout: float | None = None) -> tuple[Any, BatchInfo]:
        """(result, BatchInfo): also says how large the model call that answered was."""
        ticket = _Ticket(item)
        if self._thread is None:
            self._run([ticket])
        else:
            with self._cond:
                if self._closed:
                    raise RuntimeError("the batcher is closed")
                self._queue.append(ticket)
                self._in_flight += 1
                self._peak = max(self._peak, self._in_flight)
                self._cond.notify()
            if not ticket.done.wait(timeout):
                raise TimeoutError(f"no result within {timeout:g} s")
        if ticket.error is not None:
            raise ticket.error
        # A ticket finished without an error always has its info: _run sets it before _finish.
        assert ticket.info is not None
        return ticket.result, ticket.info

    def stats(self) -> dict[str, Any]:
        """Counters since start: model calls, items scored, items whose call failed, the average call size."""
        with self._cond:
            calls, items = self._calls, self._items
            return {
                "calls": calls,
                "items": items,
                "failed_items": self._failed_items,
                "avg_batch_size": round(items / calls, 3) if calls else None,
                "queued": len(self._queue),
                "wait_budget_ms": round(self._wait_budget_s() * 1000, 1),
            }

    def close(self, timeout: float | None = 10.0) -> None:
        """Score what is queued, then stop the thread; submit() raises afterwards."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    # ---- the model thread ----------------------------------------------------------------------------------

    def _expected(self) -> int:
        # How many requests to wait for: as many as were recently in flight at once, up to the batch limit.
        return min(self.max_batch_size, max(self._recent_peaks))

    def _wait_budget_s(self) -> float:
        # How long the next call may wait for more requests: a share of a recent call, within the limits.
        longest = max(self._recent_call_s, default=0.0)
        return min(self.max_wait_s, max(MIN_WAIT_MS / 1000.0, WAIT_SHARE * longest))

    def _next_batch(self) -> list[_Ticket] | None:
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            deadline = time.monotonic() + self._wait_budget_s()
            while len(self._queue) < self._expected() and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self.max_batch_size))]
            self._recent_peaks.append(self._peak)
            self._peak = self._in_flight
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._run(batch)
            finally:
                # Only if _run itself broke: never leave a caller waiting.
                self._finish([t for t in batch if not t.done.is_set()], RuntimeError("the batcher failed"))

    def _run(self, batch: list[_Ticket]) -> None:
        started = time.monotonic()
        try:
            results = self.predict_many([ticket.item for ticket in batch])
            if len(results) != len(batch):
                raise BatchSizeError(f"predict_many returned {len(results)} results for {len(batch)} items")
        except Exception as error:
            if len(batch) > 1:
                # Split and retry, so that only the item (or items) that make the call fail get an error.
                middle = len(batch) // 2
                self._run(batch[:middle])
                self._run(batch[middle:])
                return
            batch[0].info = BatchInfo(
                1, (started - batch[0].arrived) * 1000, (time.monotonic() - started) * 1000
            )
            self._finish(batch, error)
            return
        finished = time.monotonic()
        for ticket, result in zip(batch, results):  # noqa: B905 - lengths checked above; Python 3.9 has no strict
            ticket.result = result
            ticket.info = BatchInfo(
                len(batch), (started - ticket.arrived) * 1000, (finished - started) * 1000
            )
        with self._cond:
            self._calls += 1
            self._items += len(batch)
            self._recent_call_s.append(finished - started)
        self._finish(batch, None)

    def _finish(self, tickets: list[_Ticket], error: BaseException | None) -> None:
        if not tickets:
            return
        with self._cond:
            if error is not None:
                self._failed_items += len(tickets)
            if self._thread is not None:
                # Before the callers wake: one that sends its next request at once must not count twice.
                self._in_flight -= len(tickets)
        for ticket in tickets:
            if error is not None:
                ticket.error = error
            ticket.done.set()
