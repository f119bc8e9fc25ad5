"""Every periodic task Lynx runs, in one place."""

from django.conf import settings


def beat_schedule() -> dict[str, dict]:
    return {
        # Compares desired and observed state of every live service, hands lost operation
        # steps (their worker died) to a live worker, and restarts dead local replicas.
        "reconcile": {
            "task": "workers.tasks.reconcile",
            "schedule": settings.LYNX_RECONCILE_SECONDS,
            "options": {"expires": settings.LYNX_RECONCILE_SECONDS},
        },
    }
