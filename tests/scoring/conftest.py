"""Shared fixtures for the scoring tests: the demo model (built once, cached by source hash) and real local
serves (a supervisor, its front proxy and inference-server replicas) that are always stopped afterwards."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from scoring import control

REPO = Path(__file__).resolve().parents[2]
DEFAULT_ENTRY_SCRIPT = REPO / "scoring" / "entry_scripts" / "score_tf2.py"
CACHE = REPO / "var" / "cache" / "demo-model"
PRIMARY_KEY = "primary-key-for-tests-5f1c"
SECONDARY_KEY = "secondary-key-for-tests-9a2e"


def wait_for(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Poll `predicate` until it returns something truthy (returned), or fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def demo_model_dir() -> Path:
    """The demo model (model/, labels.txt, metrics.json), rebuilt only when its recipe changes."""
    from scoring.demo_model import build_cached

    return build_cached(CACHE, quiet=True, timeout=300)


@dataclass
class Served:
    state_dir: Path
    port: int
    key_file: Path
    pid: int = 0  # the supervisor's, as spawn() returned it

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def status(self) -> dict[str, Any]:
        status = control.read_status(self.state_dir)
        assert status is not None, "the supervisor is not running"
        return status

    def score(self, body: bytes, key: str | None = PRIMARY_KEY, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return requests.post(f"{self.base_url}/score", data=body, headers=headers, timeout=30, **kwargs)

    def wait_ready(self, replicas: int, timeout: float = 120) -> dict[str, Any]:
        def all_ready():
            status = control.read_status(self.state_dir)
            if status is None:  # not locked yet, or gone
                exited = self.pid and not Path(f"/proc/{self.pid}").exists()
                assert not exited, f"supervisor exited:\n{control.tail_logs(self.state_dir)['supervisor']}"
                return None
            states = [r["state"] for r in status["replicas"]]
            return status if states == ["ready"] * replicas else None

        return wait_for(all_ready, timeout=timeout, what=f"{replicas} ready replica(s)")


@pytest.fixture(scope="session")
def serve(tmp_path_factory, demo_model_dir) -> Iterator[Callable[..., Served]]:
    """Factory: start a real local serve of the default entry script and the demo model via control.spawn."""
    started: list[Path] = []

    def start(*, replicas: int, entry_script: Path = DEFAULT_ENTRY_SCRIPT, wait: bool = True, **options: Any):
        root = tmp_path_factory.mktemp("serve")
        key_file = root / "keys.json"
        control.write_key_file(key_file, PRIMARY_KEY, SECONDARY_KEY)
        served = Served(state_dir=root / "state", port=control.free_port(), key_file=key_file)
        started.append(served.state_dir)
        served.pid = control.spawn(
            state_dir=served.state_dir,
            entry_script=entry_script,
            model_path=demo_model_dir,
            model_name="digits",
            model_version=3,
            port=served.port,
            replicas=replicas,
            key_file=key_file,
            **options,
        )
        if wait:
            served.wait_ready(replicas)
        return served

    yield start
    for state_dir in started:
        control.stop(state_dir)


@pytest.fixture(scope="session")
def heldout_digits() -> tuple[Any, Any]:
    from scoring.demo_model import load_split

    _, _, x_test, y_test = load_split()
    return x_test, y_test
