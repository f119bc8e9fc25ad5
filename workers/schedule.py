"""Every periodic task Lynx runs, in one place."""

import os

from django.conf import settings


def _seconds(name: str, default: float) -> float:
    # Settings win; the environment is the fallback until lynx/settings.py names it.
    return float(getattr(settings, name, None) or os.environ.get(name) or default)


def beat_schedule() -> dict[str, dict]:
    expiry_every = _seconds("LYNX_EXPIRY_CHECK_SECONDS", 60)
    azure_sync_every = _seconds("LYNX_AZURE_SYNC_SECONDS", 300)
    upload_sweep_every = _seconds("LYNX_UPLOAD_SWEEP_SECONDS", 3600)
    reconcile_local_every = _seconds("LYNX_RECONCILE_LOCAL_SECONDS", 2)
    return {
        # The local target's services, and operation steps whose worker died. Every 2 s, so that a killed
        # replica shows on the page within ~3 s and a dead worker's step is taken over within ~15 s (with the
        # 8 s lease). A pass is cheap: it reads each supervisor's status.json, which the supervisor rewrites
        # at once when a replica dies. (The supervisor does not poke Lynx itself: it has no broker to reach,
        # and a deployment's replicas are better kept apart from Lynx's credentials.)
        "reconcile-local": {
            "task": "workers.tasks.reconcile_local",
            "schedule": reconcile_local_every,
            "options": {"expires": reconcile_local_every},
        },
        # Compares desired and observed state of the live Azure services (an HTTPS call each, hence every
        # 10 s, not 2; a Healthy one only every 5 minutes, see deployments/services/reconcile.py), and hands
        # lost operation steps (their worker died) to a live worker.
        "reconcile": {
            "task": "workers.tasks.reconcile",
            "schedule": settings.LYNX_RECONCILE_SECONDS,
            "options": {"expires": settings.LYNX_RECONCILE_SECONDS},
        },
        # Nothing forgotten running: warns owners ahead of a cluster's expiry or idle limit, and
        # tears down (deployments first, then the cluster) where the owner chose automatic teardown.
        "check-expiry": {
            "task": "workers.tasks.check_expiry",
            "schedule": expiry_every,
            "options": {"expires": expiry_every},
        },
        # What really runs (and bills) in each Azure ML workspace: compute targets and web services Lynx did
        # not create, and ones Lynx believes exist that Azure no longer lists.
        "sync-azure": {
            "task": "workers.tasks.sync_azure",
            "schedule": azure_sync_every,
            "options": {"expires": azure_sync_every},
        },
        # A web or worker process killed during an upload runs no cleanup: its unpacking folder (up to
        # 4 times the upload) would stay for ever. Removes those older than LYNX_UPLOAD_STALE_HOURS.
        "sweep-uploads": {
            "task": "workers.tasks.sweep_uploads",
            "schedule": upload_sweep_every,
            "options": {"expires": upload_sweep_every},
        },
    }
