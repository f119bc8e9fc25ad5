"""Long actions: 202 and an operation; `--wait` prints its lines as they come and exits 1 if it fails."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from cli.client import Client
from cli.config import Config
from cli.operations import operation_wait
from tests.cli.conftest import FakeLynx, Reply, Seen, operation, started

SCRIPT = [
    (1, "Queued by dana"),
    (2, "Writing the service spec"),
    (3, "Starting 2 replicas"),
    (5, "Replica 0 ready"),
    (6, "Replica 1 ready"),
    (8, "Succeeded: digits-ci is Healthy"),
]


def _progressing(final: str = "succeeded", error: str = "", steps: int = 4):
    """An operation that reveals a few more of SCRIPT's lines at each poll and then finishes."""
    polls = {"count": 0}

    def serve(seen: Seen) -> Reply:
        polls["count"] += 1
        shown = SCRIPT[: min(len(SCRIPT), polls["count"] * 2)]
        done = polls["count"] >= steps
        after = int(seen.param("after_line") or 0)
        lines = [{"id": i, "at": "2025-01-01T00:00:00Z", "text": t} for i, t in shown if i > after]
        state = final if done else "running"
        extra: dict[str, Any] = {
            "progress": min(100, polls["count"] * 25),
            "phase": "replicas",
            "lines": lines,
        }
        return Reply(200, operation(7, state, error=error if done else "", **extra))

    return serve


def test_without_wait_it_prints_the_operation_and_its_url_and_exits_0(lynx: FakeLynx, run):
    lynx.on("POST", "/api/v1/deployments", started(7))

    result = run("deploy", "digits-ci", "--model", "digits", "--cluster", "local-gpu")

    assert result.code == 0
    assert result.out == f"operation 7 queued: {lynx.url}/api/v1/operations/7\n"
    assert lynx.requests_to("GET", "/api/v1/operations/7") == []


def test_wait_prints_each_progress_line_once_in_order_and_exits_0(lynx: FakeLynx, run):
    lynx.on("POST", "/api/v1/deployments", started(7))
    lynx.on("GET", "/api/v1/operations/7", _progressing())

    result = run("deploy", "digits-ci", "--model", "digits", "--cluster", "local-gpu", "--wait")

    assert result.code == 0, result.err
    assert result.out.splitlines() == [text for _, text in SCRIPT]
    asked = [seen.param("after_line") for seen in lynx.requests_to("GET", "/api/v1/operations/7")]
    assert asked[:4] == ["0", "2", "5", "8"]
    # stderr is not a terminal here: no progress bar, no carriage returns in a log file.
    assert result.err == ""


def test_wait_exits_1_with_the_operations_error_when_it_fails(lynx: FakeLynx, run):
    lynx.on("DELETE", "/api/v1/clusters/local-gpu", started(7))
    lynx.on("GET", "/api/v1/operations/7", _progressing("failed", "Port 9001 is held by another process."))

    result = run("clusters", "delete", "local-gpu", "--wait")

    assert result.code == 1
    assert result.err == "lynx: operation 7 failed: Port 9001 is held by another process.\n"
    assert result.out.splitlines() == [text for _, text in SCRIPT]


def test_the_apis_warnings_go_to_stderr(lynx: FakeLynx, run):
    lynx.on("POST", "/api/v1/clusters", started(7, warnings=["This cluster expires in 2 hours."]))

    result = run("clusters", "create", "local-gpu", "--target", "local")

    assert result.code == 0
    assert result.err == "lynx: warning: This cluster expires in 2 hours.\n"


def test_wait_rides_out_a_web_restart(lynx: FakeLynx, run):
    lynx.on("POST", "/api/v1/deployments/d/keys/regenerate", started(7))
    finished = operation(7, "succeeded", lines=[{"id": 1, "at": "2025-01-01T00:00:00Z", "text": "Done"}])
    lynx.on(
        "GET",
        "/api/v1/operations/7",
        Reply(502, b"bad gateway", {"Content-Type": "text/plain"}),
        Reply(503, {"detail": "starting"}),
        Reply(200, finished),
        Reply(200, operation(7, "succeeded", lines=[])),
    )

    result = run("keys", "d", "--regenerate", "secondary", "--wait")

    assert result.code == 0, result.err
    assert result.out == "Done\n"
    assert lynx.requests_to("POST", "/api/v1/deployments/d/keys/regenerate")[0].json() == {"key": "secondary"}


def test_deploy_sends_the_settings_its_options_give(lynx: FakeLynx, run, tmp_path: Path):
    lynx.on("POST", "/api/v1/deployments", started(7))
    script = tmp_path / "score.py"
    script.write_text("def init():\n    pass\n")
    environment = tmp_path / "env.yml"
    environment.write_text("name: scoring\n")

    result = run(
        "deploy", "digits-ci", "--model", "digits:3", "--cluster", "local-gpu", "--replicas", "2",
        "--cpu", "1.5", "--memory-gb", "2", "--gpu", "--gpu-cores", "1", "--autoscale", "1:4",
        "--max-batch-size", "8", "--entry-script", str(script), "--environment", str(environment),
    )  # fmt: skip

    assert result.code == 0, result.err
    (sent,) = lynx.requests_to("POST", "/api/v1/deployments")
    assert sent.json() == {
        "name": "digits-ci",
        "model": "digits",
        "model_version": 3,
        "cluster": "local-gpu",
        "replicas": 2,
        "cpu_cores": 1.5,
        "memory_gb": 2.0,
        "gpu_enabled": True,
        "gpu_cores": 1,
        "autoscale_enabled": True,
        "autoscale_min_replicas": 1,
        "autoscale_max_replicas": 4,
        "max_batch_size": 8,
        "entry_script": "def init():\n    pass\n",
        "environment_yaml": "name: scoring\n",
    }
    assert sent.headers["Authorization"] == "Bearer lynx_test-token"
    assert len(sent.headers["Idempotency-Key"]) == 32


def test_update_sends_only_what_changes(lynx: FakeLynx, run):
    lynx.on("PATCH", "/api/v1/deployments/digits-ci", started(7))

    result = run("deployments", "update", "digits-ci", "--model", "digits:2", "--canary", "10", "--no-gpu")

    assert result.code == 0, result.err
    (sent,) = lynx.requests_to("PATCH", "/api/v1/deployments/digits-ci")
    assert sent.json() == {"model": "digits", "model_version": 2, "gpu_enabled": False, "canary_percent": 10}


def test_cluster_create_sends_only_the_target_fields_given(lynx: FakeLynx, run):
    lynx.on("POST", "/api/v1/clusters", started(7))

    run(
        "clusters", "create", "gpu-east", "--target", "azureml_aks", "--workspace", "ml-prod",
        "--vm-size", "Standard_NC6s_v3", "--node-count", "3", "--expires-in-hours", "8", "--no-auto-teardown",
    )  # fmt: skip

    (sent,) = lynx.requests_to("POST", "/api/v1/clusters")
    assert sent.json() == {
        "name": "gpu-east",
        "target": "azureml_aks",
        "workspace": "ml-prod",
        "vm_size": "Standard_NC6s_v3",
        "node_count": 3,
        "expires_in_hours": 8,
        "auto_teardown": False,
    }


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_a_progress_bar_is_drawn_on_stderr_and_cleared(lynx: FakeLynx):
    lynx.on("GET", "/api/v1/operations/7", _progressing())
    out, err = io.StringIO(), _Terminal()

    code = operation_wait(
        Client(Config(url=lynx.url, token="lynx_t")), 7, out=out, err=err, sleep=lambda s: None
    )

    assert code == 0
    assert "]  25%  replicas" in err.getvalue() and "#" * 15 + "-" * 15 + "]  50%" in err.getvalue()
    assert err.getvalue().endswith("\r\x1b[K")  # the bar is gone once it is over
    assert "\r" not in out.getvalue()  # stdout keeps only the lines


def test_without_a_number_the_terminal_shows_a_spinner_and_the_phase(lynx: FakeLynx):
    lynx.on(
        "GET",
        "/api/v1/operations/7",
        Reply(200, operation(7, "running", progress=None, phase="provision", lines=[])),
        Reply(200, operation(7, "succeeded", progress=None, phase="done", lines=[])),
    )
    err = _Terminal()

    operation_wait(
        Client(Config(url=lynx.url, token="lynx_t")), 7, out=io.StringIO(), err=err, sleep=lambda s: None
    )

    assert "| provision" in err.getvalue()


def test_dry_run_only_asks_lynx_to_check_and_prints_its_warnings(lynx: FakeLynx, run):
    lynx.on(
        "POST", "/api/v1/deployments", Reply(200, {"ok": True, "warnings": ["2 replicas on 1 GPU share it."]})
    )

    result = run("deploy", "digits-ci", "--model", "digits", "--cluster", "local-gpu", "--dry-run")

    assert result.code == 0
    assert result.out == "Checked: Lynx would accept this.\n"
    assert result.err == "lynx: warning: 2 replicas on 1 GPU share it.\n"
    (seen,) = lynx.requests_to("POST", "/api/v1/deployments")
    assert seen.param("dry_run") == "true"
