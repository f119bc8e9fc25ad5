"""The worker's broker consumer: Celery's, mended so that a broker outage cannot kill the worker."""

from __future__ import annotations

import logging

from celery.worker.consumer import Consumer as CeleryConsumer

log = logging.getLogger(__name__)


class Consumer(CeleryConsumer):
    """Celery's consumer, surviving the connection clean-up that kombu 5.7.0's Redis transport fails.

    When the broker goes away while the worker holds a scheduled (ETA/countdown) task, which it always
    does while an operation waits on the cloud, celery 5.7.0 first `collect()`s the broken connection and
    then `close()`s it. The Redis channel's close in `collect()` fails in its BRPOP read (the socket is
    dead), so the channel stays open while `collect()` detaches the transport (`transport.client = None`);
    the second close then restores the held messages through a new pool built from
    `transport.client.hostname` and raises AttributeError. `ignore_errors()` lets only connection errors
    through, so it reached the worker as "Unrecoverable error" and the process exited. No kombu or celery
    release fixes it (5.7.0 is the newest of both); kombu#1733 added the read in close. Reproduced by
    tests/workers/test_broker_outage.py.

    By then the connection is already detached (`self.connection` is None), so swallowing the error loses
    nothing: the held messages stay in Redis's unacked set (restored after the visibility timeout, if the
    broker kept them), and the reconciler re-dispatches any operation whose step went quiet sooner.
    """

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        try:
            super().on_connection_error_after_connected(exc)
        except AttributeError as error:
            if self.connection is not None:
                raise  # not the detached-transport failure described above
            log.warning("broker connection clean-up failed (kombu 5.7.0 detached transport): %r", error)
