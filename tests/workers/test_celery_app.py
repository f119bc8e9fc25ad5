"""The Celery app's broker settings: an outage is waited out, never fatal, and never hangs a caller."""

from __future__ import annotations

from workers.celery import app
from workers.consumer import Consumer


def test_the_worker_and_beat_retry_the_broker_forever_with_bounded_sockets():
    conf = app.conf
    assert conf.broker_connection_retry and conf.broker_connection_retry_on_startup
    assert conf.broker_connection_max_retries is None  # Celery's default gives up after 100 attempts
    options = conf.broker_transport_options
    assert 0 < options["socket_connect_timeout"] <= 5 and 0 < options["socket_timeout"] <= 30
    assert options["visibility_timeout"] >= 3600  # kept from settings: longer than the longest task


def test_the_worker_uses_the_consumer_that_survives_a_broker_outage():
    from celery.utils.imports import symbol_by_name

    assert symbol_by_name(app.conf.worker_consumer) is Consumer
