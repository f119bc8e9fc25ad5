"""Deployments: read them; deploy, update, roll back, shift traffic, move, delete; keys, logs, test scoring.

Each write is its page's: the same role check first, the same Django form built from the JSON body, the same
service, so the same checks, refusals and audit events apply. `common` holds the router and the reads; the
other modules add their endpoints to it when imported.
"""

from api.routes.deployments import access, changes  # noqa: F401 - importing them registers their endpoints
from api.routes.deployments.common import deployment_by_ref, router

__all__ = ["deployment_by_ref", "router"]
