"""Dashboard pages: the overview, the audit log, prices, people, and the health check."""

from .audit import audit_export, audit_list
from .health import healthz
from .overview import cluster_expiry_cancel_view, cluster_expiry_extend_view, overview
from .people import people, person_create, person_update
from .prices import price_create, price_list, price_update

__all__ = [
    "audit_export",
    "audit_list",
    "cluster_expiry_cancel_view",
    "cluster_expiry_extend_view",
    "healthz",
    "overview",
    "people",
    "person_create",
    "person_update",
    "price_create",
    "price_list",
    "price_update",
]
