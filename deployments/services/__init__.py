"""Services: the plain typed functions every write goes through (views, tasks and commands call them)."""

from .clusters import cluster_create, cluster_delete
from .deployments import deployment_create, deployment_delete
from .operations import Refused, operation_advance
from .reconcile import services_reconcile

__all__ = [
    "Refused",
    "cluster_create",
    "cluster_delete",
    "deployment_create",
    "deployment_delete",
    "operation_advance",
    "services_reconcile",
]
