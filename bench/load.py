"""A closed-loop load generator: C clients, each sending its next request as soon as the last one answered.

Every client first sends `warmup` requests (not counted), then all start together and each sends `per_client`
requests. Throughput is the requests answered over the time from that common start to the last answer: with
a fixed count per client there is no half-finished batch at the end of a time window to round away.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import requests

from .report import percentile


@dataclass
class LoadResult:
    concurrency: int
    seconds: float = 0.0
    cpu_seconds: float | None = None  # the server's CPU time while the measured requests ran
    latencies_ms: list[float] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return len(self.latencies_ms)

    @property
    def throughput(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def latency(self, q: float) -> float | None:
        return percentile(self.latencies_ms, q)

    @property
    def per_cpu_second(self) -> float | None:
        """Requests answered per CPU-second the server used: what the machine's other load does not change."""
        return self.ok / self.cpu_seconds if self.cpu_seconds else None

    @property
    def avg_batch_size(self) -> float | None:
        """Per model call (each call counted once), from the answers' X-Lynx-Batch-Size."""
        calls = sum(1.0 / size for size in self.batch_sizes if size > 0)
        return len(self.batch_sizes) / calls if calls else None


def closed_loop(
    url: str,
    key: str,
    bodies: list[bytes],
    *,
    concurrency: int,
    per_client: int,
    warmup: int = 1,
    timeout: float = 300.0,
    cpu_seconds: Callable[[], float] | None = None,
) -> LoadResult:
    """`cpu_seconds()`, if given, reads the server's CPU time: it is read as the measured requests start and
    after the last one, so the result can say how many requests the server answered per CPU-second."""
    result = LoadResult(concurrency)
    lock = threading.Lock()
    start = threading.Barrier(concurrency + 1)
    finished: list[float] = []
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/octet-stream"}

    def client(index: int) -> None:
        session = requests.Session()
        turn = index * 7919  # different clients send different images

        def send(record: bool) -> None:
            nonlocal turn
            body = bodies[turn % len(bodies)]
            turn += 1
            begin = time.perf_counter()
            try:
                response = session.post(url, data=body, headers=headers, timeout=timeout)
            except requests.RequestException as error:
                with lock:
                    result.errors.append(repr(error))
                return
            elapsed = (time.perf_counter() - begin) * 1000
            if not record:
                return
            with lock:
                if response.status_code != 200:
                    result.errors.append(f"{response.status_code} {response.text[:200]}")
                    return
                result.latencies_ms.append(elapsed)
                size = response.headers.get("X-Lynx-Batch-Size")
                if size and size.isdigit():
                    result.batch_sizes.append(int(size))

        try:
            for _ in range(warmup):
                send(False)
        finally:
            start.wait()
        for _ in range(per_client):
            send(True)
        with lock:
            finished.append(time.perf_counter())
        session.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    cpu_before = cpu_seconds() if cpu_seconds else None
    for thread in threads:
        thread.join()
    result.seconds = (max(finished) if finished else time.perf_counter()) - began
    if cpu_seconds and cpu_before is not None:
        result.cpu_seconds = cpu_seconds() - cpu_before
    return result
