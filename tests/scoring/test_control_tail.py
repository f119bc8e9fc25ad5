"""Tailing logs for the dashboard's log panel stays cheap whatever a log holds: a 16 MiB line, a huge file, a
log that was just rotated."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest

from scoring import control

LONG_LINE = b"x" * (16 * 2**20)


@pytest.fixture
def bytes_read(monkeypatch) -> list[int]:
    """Every read() on a file control opens, in bytes: the work a tail does, measured instead of timed."""
    sizes: list[int] = []

    class Counting:
        def __init__(self, handle) -> None:
            self._handle = handle

        def read(self, *args):
            data = self._handle.read(*args)
            sizes.append(len(data))
            return data

        def __getattr__(self, name):
            return getattr(self._handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self._handle.close()

    monkeypatch.setattr(control, "open", lambda *a, **k: Counting(builtins.open(*a, **k)), raising=False)
    return sizes


def test_a_16_mib_line_is_cut_and_the_tail_reads_a_bounded_window(tmp_path, bytes_read):
    log = tmp_path / "replica-0.log"
    log.write_bytes(b"before\n" + LONG_LINE + b"\nafter 1\nafter 2\n")
    text = control._tail(log, 3)
    assert sum(bytes_read) <= 1 * 2**20, f"read {sum(bytes_read)} bytes of a {log.stat().st_size} byte file"
    first, *rest = text.split("\n")
    assert rest == ["after 1", "after 2"]
    assert first.startswith("[…]") and first.endswith(
        "[… line cut]"
    )  # partial on the left, clipped on the right
    assert len(first) <= control.TAIL_LINE_MAX_CHARS + 40


def test_a_16_mib_last_line_without_a_newline_comes_back_as_one_clipped_line(tmp_path, bytes_read):
    log = tmp_path / "replica-0.log"
    log.write_bytes(b"before\n" + LONG_LINE)
    text = control._tail(log, 200)
    assert sum(bytes_read) <= 1 * 2**20
    assert "\n" not in text and text.endswith("[… line cut]") and len(text) < 10_000


def test_tail_logs_of_a_big_log_reads_a_window_and_gives_whole_lines(tmp_path, bytes_read):
    (tmp_path / "logs").mkdir()
    lines = [f"2026-11-29 04:00:00 INFO line {i}" for i in range(400_000)]  # ~14 MB
    (tmp_path / "logs" / "replica-0.log").write_text("\n".join(lines) + "\n")
    logs = control.tail_logs(tmp_path, lines=200)
    assert logs["replica-0"].split("\n") == lines[-200:]
    assert sum(bytes_read) <= 2 * 2**20


@pytest.mark.parametrize("window", [7, 8], ids=["after-the-newline", "on-the-newline"])
def test_a_window_that_starts_on_a_line_boundary_marks_no_line_as_cut(tmp_path, monkeypatch, window):
    monkeypatch.setattr(control, "TAIL_WINDOW_BYTES", window)
    log = tmp_path / "supervisor.log"
    log.write_bytes(b"0123456\nabcdef\n")
    assert control._tail(log, 5) == "abcdef"
    monkeypatch.setattr(control, "TAIL_WINDOW_BYTES", 6)
    assert control._tail(log, 5) == "[…] bcdef"


def test_the_supervisor_tail_reaches_into_the_rotated_log_when_the_current_one_is_short(tmp_path):
    (tmp_path / "supervisor.log.1").write_text("".join(f"old {i}\n" for i in range(100)))
    (tmp_path / "supervisor.log").write_text("new 0\nnew 1\n")
    assert control.tail_logs(tmp_path, lines=4)["supervisor"] == "old 98\nold 99\nnew 0\nnew 1"


def test_a_missing_log_tails_to_nothing(tmp_path):
    assert control._tail(Path(tmp_path / "absent.log"), 10) == ""
