"""The Celery app. Settings come from Django's settings (CELERY_* names)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

app = Celery("lynx")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"], related_name="tasks")


@app.on_after_finalize.connect
def _install_schedule(sender: Celery, **_: object) -> None:
    from workers.schedule import beat_schedule

    sender.conf.beat_schedule = beat_schedule()
