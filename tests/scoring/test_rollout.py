"""Rolling updates (SIGUSR2 + desired.json) and stop() on a real local serve."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import requests

from scoring import control
from scoring.demo_model import render_digit

from .conftest import DEFAULT_ENTRY_SCRIPT, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(serve):
    return serve(replicas=1)


class ScoringLoop(threading.Thread):
    """A client scoring in a loop, as fast as it can, counting what went wrong."""

    def __init__(self, served, image: bytes) -> None:
        super().__init__(daemon=True)
        self.served, self.image = served, image
        self.halt = threading.Event()
        self.ok, self.failures = 0, []

    def run(self) -> None:
        session = requests.Session()
        while not self.halt.is_set():
            try:
                response = session.post(
                    f"{self.served.base_url}/score",
                    data=self.image,
                    headers={"Authorization": "Bearer primary-key-for-tests-5f1c"},
                    timeout=30,
                )
                if response.status_code == 200 and response.json()["predictions"]:
                    self.ok += 1
                else:
                    self.failures.append(f"{response.status_code} {response.text[:200]}")
            except requests.RequestException as error:
                self.failures.append(repr(error))

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=40)


def _rollout_done(served, request_id: str):
    def done():
        rollout = served.status()["rollout"]
        if rollout.get("request_id") == request_id and rollout["state"] in ("succeeded", "failed"):
            return rollout
        return None

    return done


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_rolling_from_one_to_two_replicas_fails_no_request_of_a_client_scoring_in_a_loop(
    served, demo_model_dir, heldout_digits
):
    before = served.status()
    old_pids = [before["replicas"][0]["pid"], *before["replicas"][0]["worker_pids"]]
    client = ScoringLoop(served, render_digit(heldout_digits[0][0]))
    client.start()
    try:
        wait_for(lambda: client.ok >= 20, timeout=30, what="the client to get going")
        request_id = control.roll(
            served.state_dir,
            {"entry_script": DEFAULT_ENTRY_SCRIPT, "model_path": demo_model_dir, "model_name": "digits",
             "model_version": 4, "replicas": 2},
        )  # fmt: skip
        rollout = wait_for(_rollout_done(served, request_id), timeout=150, what="the rollout")
        scored_during_rollout = client.ok
        wait_for(
            lambda: client.ok >= scored_during_rollout + 20, timeout=30, what="scoring after the rollout"
        )
    finally:
        client.stop()
    assert rollout["state"] == "succeeded", rollout["error"]
    assert client.failures == []
    after = served.status()
    assert after["generation"] == rollout["generation"] == before["generation"] + 1
    assert [r["state"] for r in after["replicas"]] == ["ready", "ready"]
    assert after["retiring"] == []
    assert not any(_alive(pid) for pid in old_pids)
    response = served.score(render_digit(heldout_digits[0][1]))
    assert response.json()["model"] == {"name": "digits", "version": "4"}


def test_a_rollout_whose_replicas_never_get_ready_keeps_the_old_ones_serving(
    served, demo_model_dir, heldout_digits, tmp_path
):
    broken = tmp_path / "score_broken.py"
    broken.write_text(
        "def init():\n    raise RuntimeError('no model for you')\n\n\ndef run(data):\n    return data\n"
    )
    serving = served.status()["replicas"]
    request_id = control.roll(
        served.state_dir, {"entry_script": broken, "model_path": demo_model_dir, "replicas": 1}
    )
    rollout = wait_for(_rollout_done(served, request_id), timeout=150, what="the rollout to fail")
    assert rollout["state"] == "failed"
    assert "exited" in rollout["error"]
    status = served.status()
    assert [(r["pid"], r["state"]) for r in status["replicas"]] == [(r["pid"], "ready") for r in serving]
    assert served.score(render_digit(heldout_digits[0][0])).status_code == 200
    (failed,) = rollout["replicas"]
    assert failed["state"] == "dead" and failed["exit_code"] == 3  # the inference server's "init() failed"
    assert "no model for you" in control.tail_logs(served.state_dir, lines=400)[failed["name"]]


def test_a_replica_whose_init_failed_once_is_started_again_by_the_supervisor_and_serves(serve, tmp_path):
    flaky_dir = tmp_path / "flaky"
    flaky_dir.mkdir()
    flaky = flaky_dir / "score_flaky.py"
    # Nothing a replica writes outlives its start (its working directory is a fresh tmpfs): the test says
    # when init() may succeed, in the script's folder, which the sandbox binds read-only.
    flaky.write_text(
        "import pathlib\n"
        "def init():\n"
        "    if not (pathlib.Path(__file__).parent / 'go').exists():\n"
        "        raise RuntimeError('first start fails')\n"
        "def run(data):\n"
        "    return {'echo': data}\n"
    )
    served = serve(replicas=1, entry_script=flaky, wait=False)

    def failed_once():
        replicas = served.status()["replicas"]
        return replicas and (replicas[0]["last_termination"] or {}).get("reason") == "Error"

    wait_for(failed_once, timeout=60, what="the first start to fail")
    (flaky_dir / "go").touch()
    # A failed start is tried again (up to three times, tests/faults/test_init_exits.py), as Kubernetes would.
    (replica,) = served.wait_ready(1, timeout=60)["replicas"]
    assert replica["restarts"] >= 1 and replica["failed_starts"] == 0
    assert replica["last_termination"]["exit_code"] == 3  # the inference server's "init() failed"
    assert "first start fails" in control.tail_logs(served.state_dir, lines=400)[replica["name"]]
    assert wait_for(lambda: served.status()["rollout"]["state"] == "succeeded", timeout=5)
    assert served.score(b'"hi"').json() == {"echo": '"hi"'}
    assert control.stop(served.state_dir)


def test_stop_leaves_no_process_behind_and_frees_the_port(served):
    status = served.status()
    pids = [status["pid"]] + [p for r in status["replicas"] for p in [r["pid"], *r["worker_pids"]]]
    assert control.stop(served.state_dir) is True
    assert not any(_alive(pid) for pid in pids)
    assert not control.is_running(served.state_dir)
    assert control.read_status(served.state_dir) is None
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", served.port))  # free again
    with pytest.raises(requests.ConnectionError):
        requests.get(served.base_url + "/", timeout=5)
