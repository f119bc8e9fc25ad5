"""Gunicorn hooks for a replica; gunicorn loads this file by path (-c), so it imports nothing from Lynx."""

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def post_fork(server, worker):
    # The worker must not outlive its arbiter: if the arbiter is killed outright (SIGKILL, OOM), nobody would
    # stop the worker, and it would keep the model in memory. The kernel sends SIGKILL when the parent dies.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != server.pid:  # the arbiter died before prctl took effect
        os._exit(1)
