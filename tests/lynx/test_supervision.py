"""`make run` keeps its processes up: one that exits is started again with a growing pause, and the others,
local replicas included, are not touched (issue 11, item 2)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from lynx import supervision
from lynx.supervision import Child, keep_running


def _child(tmp_path: Path, code: str, name: str = "flaky") -> Child:
    child = Child(name=name, argv=[sys.executable, "-c", code], env={}, cwd=tmp_path)
    child.start()
    return child


def test_a_child_that_exits_is_started_again_with_a_growing_pause(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(supervision, "FIRST_PAUSE_S", 0.1)
    starts = tmp_path / "starts"
    flaky = _child(tmp_path, f"open({str(starts)!r}, 'a').write('x'); raise SystemExit(3)")
    steady = _child(tmp_path, "import time; time.sleep(60)", name="steady")
    steady_pid = steady.process.pid
    flaky.pause_s = 0.1
    began = time.monotonic()
    keep_running([flaky, steady], lambda: len(flaky.exits) >= 4, tick_s=0.02)
    elapsed = time.monotonic() - began
    try:
        assert flaky.exits[:4] == [3, 3, 3, 3] and flaky.restarts == 3
        assert len(starts.read_text()) == 4
        # Pauses of 0.1, 0.2 and 0.4 s between the four runs: it backs off instead of spinning.
        assert elapsed >= 0.7
        assert steady.process.pid == steady_pid and steady.process.poll() is None
        out = capsys.readouterr().out
        assert "the flaky exited with code 3; starting it again in 0.1 s (restart 1)" in out
        assert "starting it again in 0.4 s (restart 3)" in out
    finally:
        steady.stop(timeout=5)
        flaky.stop(timeout=5)


def test_the_pause_starts_over_after_a_child_ran_for_a_while(tmp_path, monkeypatch):
    monkeypatch.setattr(supervision, "HEALTHY_AFTER_S", 0.0)
    child = _child(tmp_path, "raise SystemExit(1)")
    child.pause_s = 16.0
    child.process.wait()
    child.check(time.monotonic())
    assert child.restart_at is not None and child.restart_at - time.monotonic() <= supervision.FIRST_PAUSE_S
