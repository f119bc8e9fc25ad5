"""A real local serve: the supervisor, its front proxy and two inference-server replicas of the default
entry script with the demo model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from scoring import control
from scoring.demo_model import LABELS, render_digit
from scoring.state_dir import EXIT_CONFIG, EXIT_LOCKED, EXIT_PORT_IN_USE

from .conftest import DEFAULT_ENTRY_SCRIPT, PRIMARY_KEY, REPO, SECONDARY_KEY, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(serve):
    return serve(replicas=2, max_batch_size=4, max_batch_wait_ms=10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def _all_pids(status: dict) -> list[int]:
    return [status["pid"]] + [p for r in status["replicas"] for p in [r["pid"], *r["worker_pids"]]]


def test_liveness_probe_is_open_and_answers_healthy(served):
    response = requests.get(served.base_url + "/", timeout=10)
    assert response.status_code == 200
    assert response.text == "Healthy"


@pytest.mark.parametrize(
    ("fmt", "options"),
    [("PNG", {"size": 64}), ("JPEG", {"size": 150, "color": True})],
    ids=["png-grey", "jpeg-colour"],
)
def test_scores_an_image_with_the_right_digit(served, heldout_digits, fmt, options):
    x_test, y_test = heldout_digits
    right = 0
    for pixels, label in zip(x_test[:10], y_test[:10], strict=True):
        response = served.score(render_digit(pixels, fmt=fmt, **options))
        assert response.status_code == 200, response.text
        body = response.json()
        predictions = body["predictions"]
        assert len(predictions) == 5
        assert [p["probability"] for p in predictions] == sorted(
            (p["probability"] for p in predictions), reverse=True
        )
        assert all(p["label"] == LABELS[p["class"]] for p in predictions)
        assert body["model"] == {"name": "digits", "version": "3"}
        right += predictions[0]["class"] == label
    assert right >= 9


def test_requests_without_a_key_or_with_a_wrong_key_get_401(served, heldout_digits):
    image = render_digit(heldout_digits[0][0])
    for headers in ({}, {"Authorization": "Bearer not-the-key"}, {"Authorization": f"Basic {PRIMARY_KEY}"}):
        response = requests.post(served.base_url + "/score", data=image, headers=headers, timeout=10)
        assert response.status_code == 401
        assert "message" in response.json()
    assert requests.get(served.base_url + "/swagger.json", timeout=10).status_code == 401


def test_secondary_key_works(served, heldout_digits):
    response = served.score(render_digit(heldout_digits[0][0]), key=SECONDARY_KEY)
    assert response.status_code == 200
    assert response.json()["predictions"][0]["class"] == heldout_digits[1][0]


def test_get_on_score_is_405_and_swagger_is_served_with_a_key(served):
    headers = {"Authorization": f"Bearer {PRIMARY_KEY}"}
    response = requests.get(served.base_url + "/score", headers=headers, timeout=10)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert requests.get(served.base_url + "/swagger.json", headers=headers, timeout=10).status_code == 200


@pytest.mark.parametrize("body", [b"this is not an image", b"\x89PNG\r\n\x1a\n truncated", b""])
def test_undecodable_body_gets_400_with_a_message(served, body):
    response = served.score(body)
    assert response.status_code == 400
    assert response.json()["message"]


def test_concurrent_requests_are_batched_yet_each_gets_its_own_answer(served, heldout_digits):
    x_test, _ = heldout_digits
    images = [render_digit(x) for x in x_test[:16]]
    alone = [served.score(image).json()["predictions"] for image in images]
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(lambda image: served.score(image).json()["predictions"], images))
    for one, other in zip(alone, together, strict=True):
        assert [p["class"] for p in one] == [p["class"] for p in other]
        assert one[0]["probability"] == pytest.approx(other[0]["probability"], abs=1e-4)
    # a bad image in the middle of a batch fails alone
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(served.score, [images[0], b"junk", images[1], images[2]]))
    assert [answer.status_code for answer in answers] == [200, 400, 200, 200]
    top = [answer.json()["predictions"][0]["class"] for answer in answers[2:]]
    assert top == [one[0]["class"] for one in alone[1:3]]


def test_answers_carry_their_batch_size_and_status_json_averages_it_per_model_call(served, heldout_digits):
    images = [render_digit(x) for x in heldout_digits[0][:24]]
    before = served.status()["stats"].get("batched_requests", 0)
    with ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(pool.map(served.score, images))
    assert [r.status_code for r in responses] == [200] * 24
    sizes = [int(r.headers["X-Lynx-Batch-Size"]) for r in responses]
    assert all(1 <= size <= 4 for size in sizes) and max(sizes) > 1  # max_batch_size=4 in this serve

    def averaged():
        status = served.status()
        return status if status["stats"].get("batched_requests", 0) >= before + 24 else None

    status = wait_for(averaged, timeout=5, what="status.json to count the batched answers")
    stats = status["stats"]
    assert 1 < stats["avg_batch_size"] <= 4
    assert stats["model_calls"] < stats["batched_requests"]
    assert stats["batched_requests"] / stats["avg_batch_size"] == pytest.approx(stats["model_calls"], abs=1)
    per_replica = [r["avg_batch_size"] for r in status["replicas"] if r["avg_batch_size"] is not None]
    assert per_replica and all(1 <= average <= 4 for average in per_replica)


def test_latency_percentiles_count_scoring_requests_not_health_checks_or_bad_keys(served, heldout_digits):
    image = render_digit(heldout_digits[0][0])
    window = served.status()["stats"].get("latency_ms", {}).get("window", 0)
    assert requests.get(f"{served.base_url}/", timeout=10).text == "Healthy"
    assert served.score(image, key="wrong").status_code == 401
    assert [served.score(image).status_code for _ in range(3)] == [200] * 3

    def counted():
        stats = served.status()["stats"]
        return (
            stats
            if stats["responses"].get("4xx", 0) and stats["latency_ms"]["window"] >= window + 3
            else None
        )

    latency = wait_for(counted, timeout=5, what="status.json to count the requests")["latency_ms"]
    assert latency["window"] == window + 3  # the three scored images only
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]


def test_status_json_describes_the_supervisor_and_its_ready_replicas(served):
    status = served.status()
    assert status["state"] == "running"
    assert status["pid"] == int((served.state_dir / "supervisor.lock").read_text())
    assert status["scoring_uri"] == f"http://127.0.0.1:{served.port}/score"
    assert status["swagger_uri"] == f"http://127.0.0.1:{served.port}/swagger.json"
    assert [r["name"] for r in status["replicas"]] == ["replica-0", "replica-1"]
    assert {r["state"] for r in status["replicas"]} == {"ready"}
    assert status["rollout"]["state"] == "succeeded"
    assert status["model_dir"] == str(
        served.state_dir / "apps" / "digits-3" / "azureml-models" / "digits" / "3"
    )

    # stats are refreshed about every second: the earlier tests' requests show up
    def stats_with_the_401s():
        stats = served.status()["stats"]
        return stats if stats["unauthorized"] else None

    stats = wait_for(stats_with_the_401s, timeout=5, what="stats to count the 401s")
    assert stats["responses"]["2xx"] > 0 and stats["responses"]["4xx"] >= stats["unauthorized"]
    linked = served.state_dir / "apps" / "digits-3" / "azureml-models" / "digits" / "3"
    assert (next(linked.iterdir()) / "model" / "saved_model.pb").is_file()


def test_keys_appear_on_no_command_line_and_in_no_log_or_status(served):
    status = served.status()
    for pid in _all_pids(status):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        assert PRIMARY_KEY not in cmdline and SECONDARY_KEY not in cmdline
    texts = list(control.tail_logs(served.state_dir, lines=5000).values())
    texts.append((served.state_dir / "status.json").read_text())
    assert all(PRIMARY_KEY not in text and SECONDARY_KEY not in text for text in texts)


def test_a_second_serve_on_the_same_state_dir_is_refused_at_once(served, demo_model_dir):
    started = time.monotonic()
    second = subprocess.run(
        [sys.executable, "-m", "scoring.runtime", "serve", "--entry-script", str(DEFAULT_ENTRY_SCRIPT),
         "--model", str(demo_model_dir), "--port", str(control.free_port()), "--replicas", "1",
         "--key-file", str(served.key_file), "--state-dir", str(served.state_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert second.returncode == EXIT_LOCKED
    assert "already served by another supervisor" in second.stderr
    assert time.monotonic() - started < 15
    assert len(served.status()["replicas"]) == 2  # and the first one is untouched


def test_a_killed_replica_shows_dead_and_restart_dead_brings_it_back(served, heldout_digits):
    victim = served.status()["replicas"][0]
    os.kill(victim["pid"], signal.SIGKILL)

    def dead():
        replica = served.status()["replicas"][0]
        return replica if replica["state"] == "dead" else None

    assert wait_for(dead, timeout=10, what="replica-0 dead")["exit_code"] == -signal.SIGKILL
    wait_for(lambda: not any(_alive(p) for p in victim["worker_pids"]), timeout=10, what="the worker to exit")
    # the survivor keeps serving, and dead replicas are not restarted unasked
    assert served.score(render_digit(heldout_digits[0][0])).status_code == 200
    assert served.status()["replicas"][0]["state"] == "dead"

    control.restart_dead(served.state_dir)
    revived = served.wait_ready(2)["replicas"][0]
    assert revived["name"] == "replica-0" and revived["restarts"] == 1 and revived["pid"] != victim["pid"]
    assert served.score(render_digit(heldout_digits[0][1])).status_code == 200


def test_rewriting_the_key_file_locks_the_old_key_out_at_once(served, heldout_digits):
    image = render_digit(heldout_digits[0][0])
    try:
        control.write_key_file(served.key_file, "rotated-primary", SECONDARY_KEY)
        assert served.score(image, key=PRIMARY_KEY).status_code == 401
        assert served.score(image, key="rotated-primary").status_code == 200
        assert served.score(image, key=SECONDARY_KEY).status_code == 200
    finally:
        control.write_key_file(served.key_file, PRIMARY_KEY, SECONDARY_KEY)
    assert served.score(image, key=PRIMARY_KEY).status_code == 200


def test_killing_the_supervisor_outright_takes_every_replica_with_it(served):
    status = served.status()
    pids = _all_pids(status)
    os.kill(status["pid"], signal.SIGKILL)
    wait_for(lambda: not any(_alive(p) for p in pids), timeout=30, what="every process to exit")
    assert not control.is_running(served.state_dir)
    assert control.read_status(served.state_dir) is None


def test_serve_refuses_a_key_file_others_can_read(tmp_path, demo_model_dir):
    key_file = tmp_path / "keys.json"
    control.write_key_file(key_file, "k1", "k2")
    key_file.chmod(0o644)
    result = subprocess.run(
        [sys.executable, "-m", "scoring.runtime", "serve", "--entry-script", str(DEFAULT_ENTRY_SCRIPT),
         "--model", str(demo_model_dir), "--port", str(control.free_port()), "--key-file", str(key_file),
         "--state-dir", str(tmp_path / "state")],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == EXIT_CONFIG
    assert "chmod 600" in result.stderr


def test_serve_exits_4_when_the_port_is_taken(tmp_path, demo_model_dir):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = subprocess.run(
            [sys.executable, "-m", "scoring.runtime", "serve", "--entry-script", str(DEFAULT_ENTRY_SCRIPT),
             "--model", str(demo_model_dir), "--port", str(taken.getsockname()[1]), "--key", "k",
             "--state-dir", str(tmp_path / "state")],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == EXIT_PORT_IN_USE
    assert not list((tmp_path / "state").glob("logs/replica-*.log"))  # no replica was started
