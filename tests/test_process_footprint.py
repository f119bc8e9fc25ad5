"""The web server and the Celery worker never import TensorFlow (only replicas and the model builder do)."""

import subprocess
import sys

PROBE = """
import django, os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lynx.settings")
django.setup()
import lynx.wsgi, lynx.urls, workers.tasks
from django.urls import get_resolver
get_resolver().url_patterns  # import every view module
import deployments.services.operations, deployments.services.reconcile, targets.local.backend
heavy = sorted(m for m in ("tensorflow", "keras", "torch") if m in sys.modules)
print(",".join(heavy) or "none")
"""


def test_web_and_worker_code_paths_do_not_import_tensorflow():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "none"
