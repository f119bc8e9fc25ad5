"""A real supervisor and one replica of a tiny entry script that answers the length and digest of the body
it got: the front proxy streams bodies through without holding them, refuses the ones over the limit, and
shrugs off connections that never finish or vanish halfway, without filling supervisor.log."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time

import pytest
import requests

from scoring import proxy as proxy_module

from .conftest import PRIMARY_KEY, wait_for

pytestmark = pytest.mark.slow

DIGEST_SCORE_PY = """
import hashlib
import json

from azureml.contrib.services.aml_request import rawhttp
from azureml.contrib.services.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request):
    data = request.get_data()
    return AMLResponse(json.dumps({"length": len(data), "sha256": hashlib.sha256(data).hexdigest()}), 200)
"""
MiB = 2**20


@pytest.fixture(scope="module")
def served(serve, tmp_path_factory):
    script = tmp_path_factory.mktemp("digest") / "score.py"
    script.write_text(DIGEST_SCORE_PY)
    return serve(replicas=1, entry_script=script, max_batch_size=1)


def _peak_rss_growth(pid: int):
    """A context for 'how much did the peak resident memory of `pid` grow meanwhile' (Linux: VmHWM, reset by
    writing 5 to clear_refs), in bytes, read from the returned list once the block ends."""

    class Peak:
        def __enter__(self) -> list[int]:
            with open(f"/proc/{pid}/clear_refs", "w") as handle:
                handle.write("5")
            self.start, self.growth = self._read("VmRSS"), []
            return self.growth

        def __exit__(self, *exc) -> None:
            self.growth.append(self._read("VmHWM") - self.start)

        @staticmethod
        def _read(field: str) -> int:
            with open(f"/proc/{pid}/status") as status:
                line = next(line for line in status if line.startswith(field + ":"))
            return int(line.split()[1]) * 1024

    return Peak()


def _post(served, body, **headers: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {PRIMARY_KEY}", **headers}
    return requests.post(f"{served.base_url}/score", data=body, headers=headers, timeout=120)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_30_mib_body_reaches_the_replica_intact_without_the_proxy_holding_it(served, chunked):
    body = os.urandom(30 * MiB)
    sent = (body[i : i + MiB] for i in range(0, len(body), MiB)) if chunked else body
    with _peak_rss_growth(served.status()["pid"]) as growth:
        response = _post(served, sent)
    assert response.status_code == 200, response.text
    assert response.json() == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    # Reading it whole would have taken the 30 MiB at least once (twice: a bytearray, then its bytes copy).
    assert growth[0] < 8 * MiB, f"the supervisor's peak memory grew by {growth[0] / MiB:.1f} MiB"


def test_a_chunked_body_that_passes_the_limit_gets_a_413_without_the_proxy_holding_it(served):
    before = served.status()["stats"]["too_large"]
    chunks = (os.urandom(MiB) for _ in range(proxy_module.MAX_BODY_BYTES // MiB + 8))
    with _peak_rss_growth(served.status()["pid"]) as growth:
        response = _post(served, chunks)
    assert response.status_code == 413
    assert response.json() == {"message": "The request body is over the limit of 32 MiB."}
    assert growth[0] < 8 * MiB, f"the supervisor's peak memory grew by {growth[0] / MiB:.1f} MiB"
    wait_for(lambda: served.status()["stats"]["too_large"] == before + 1, timeout=5, what="too_large counted")
    assert _post(served, b"still serving").json()["length"] == 13


def test_half_open_and_vanishing_clients_are_dropped_and_leave_supervisor_log_small(served):
    log = served.state_dir / "supervisor.log"
    size_before = log.stat().st_size
    bad_before = served.status()["stats"]["bad_bodies"]
    half_open, vanishing = [], 0
    for _ in range(200):  # headers begun, never finished
        sock = socket.create_connection(("127.0.0.1", served.port))
        sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\n")
        half_open.append(sock)
    for _ in range(100):  # headers complete, a tenth of the body, then gone
        with socket.create_connection(("127.0.0.1", served.port)) as sock:
            head = f"POST /score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {PRIMARY_KEY}\r\n"
            sock.sendall(head.encode() + b"Content-Length: 10000\r\n\r\n" + b"x" * 1000)
            time.sleep(0.01)
        vanishing += 1
    try:
        deadline = time.monotonic() + proxy_module.HEADER_TIMEOUT_S + 10
        for sock in half_open:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            assert sock.recv(1024) == b"", "the proxy kept a connection that never finished its headers"
    finally:
        for sock in half_open:
            sock.close()
    wait_for(lambda: served.status()["stats"]["bad_bodies"] >= bad_before + vanishing, timeout=10,
             what="the cut-short bodies to be counted")  # fmt: skip
    assert _post(served, b"{}").status_code == 200
    grown = log.stat().st_size - size_before
    assert grown < 16 * 1024, f"supervisor.log grew by {grown} bytes:\n{log.read_text()[-3000:]}"


def test_the_stats_count_what_the_proxy_refused(served):
    stats = served.status()["stats"]
    assert {"too_large", "bad_bodies", "refused_connections", "internal_errors"} <= stats.keys()
    assert json.dumps(stats)
