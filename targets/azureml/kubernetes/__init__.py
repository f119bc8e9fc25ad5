"""Azure ML Kubernetes online endpoints (SDK v2) as a target of its own: `backend.py` registers it."""
