"""make run's console is not buried under the reconciler's every-2-seconds task lines."""

from __future__ import annotations

import logging

from lynx.log_filters import QuietHousekeeping


def _record(name: str, level: int, message: str, *args) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, args, None)


def test_routine_reconcile_lines_are_dropped_and_everything_else_kept():
    quiet = QuietHousekeeping()
    assert not quiet.filter(
        _record(
            "celery.beat",
            logging.INFO,
            "Sending due task %s (%s)",
            "reconcile-local",
            "workers.tasks.reconcile_local",
        )
    )
    assert not quiet.filter(
        _record("celery.app.trace", logging.INFO, "Task %s[%s] succeeded", "workers.tasks.reconcile", "id")
    )
    assert quiet.filter(
        _record(
            "celery.app.trace", logging.INFO, "Task %s[%s] succeeded", "workers.tasks.advance_operation", "id"
        )
    )
    assert quiet.filter(
        _record(
            "celery.app.trace", logging.ERROR, "Task %s[%s] raised", "workers.tasks.reconcile_local", "id"
        )
    )
    assert quiet.filter(_record("deployments.services.reconcile", logging.INFO, "workers.tasks.reconcile"))
