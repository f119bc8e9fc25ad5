"""process_alive: one answer for the supervisor's control and the local backend (they used to disagree)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

from scoring.state_dir import process_alive


def test_a_running_process_is_alive_even_when_its_name_looks_like_a_zombie_state(tmp_path):
    # /proc/<pid>/stat is "pid (comm) state …", and comm is the executable's name: this one holds ") Z ".
    sleep = tmp_path / "x) Z y"
    sleep.symlink_to(shutil.which("sleep"))
    child = subprocess.Popen([str(sleep), "30"])
    try:
        assert process_alive(child.pid)
    finally:
        child.kill()
        child.wait()


def test_an_exited_process_is_not_alive_reaped_or_not():
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while (
        time.monotonic() < deadline
        and open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    ):
        time.sleep(0.01)
    assert not process_alive(child.pid)  # a zombie: exited, its parent (this test) has not reaped it yet
    child.wait()
    assert not process_alive(child.pid)


def test_this_process_is_alive():
    assert process_alive(os.getpid())
