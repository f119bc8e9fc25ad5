"""Deployment targets, one package each, found through settings.LYNX_TARGETS.

A target package has `backend.py` with `make_backend(cluster: ClusterSpec) -> Backend` (the interface in
`deployments/backends/base.py`) and, when it has pages of its own, `urls.py`, `views.py`, `forms.py`,
`selectors.py`, `services/` and `templates/`; it is a Django app. Targets import the domain (`deployments`),
never the reverse: the domain reaches a target only through the registry.
"""
