"""A replica whose request threads are all busy with long calls still answers its health probe at once:
the front proxy forwards at most `max_in_flight` requests to it and keeps the rest waiting."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.slow

SLOW_SCORE_PY = """
import time

from azureml.contrib.services.aml_request import rawhttp
from azureml.contrib.services.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request):
    time.sleep(1)  # a long model call, one per request
    return AMLResponse("done", 200)
"""


def test_a_replica_busy_with_long_calls_stays_ready_and_answers_everyone(serve, tmp_path):
    script = tmp_path / "slow_score.py"
    script.write_text(SLOW_SCORE_PY)
    served = serve(replicas=1, entry_script=script, max_batch_size=1)  # 5 threads, 3 requests at a time
    until = time.monotonic() + 8

    def client() -> list[int]:  # 12 of them, each sending its next request as soon as one is answered
        codes = []
        while time.monotonic() < until:
            codes.append(served.score(b"anything").status_code)
        return codes

    states = []
    with ThreadPoolExecutor(max_workers=12) as pool:
        clients = [pool.submit(client) for _ in range(12)]
        while not all(c.done() for c in clients):
            states.append(served.status()["replicas"][0]["state"])
            time.sleep(0.2)
    codes = [code for c in clients for code in c.result()]
    assert set(codes) == {200} and len(codes) >= 12
    # Without the limit every thread would be in a 1 s call with more requests queued behind it, the 1 s
    # health probes would time out, and the replica would be taken out of rotation ("starting").
    assert set(states) == {"ready"}, states
    assert served.status()["stats"]["no_replica"] == 0
