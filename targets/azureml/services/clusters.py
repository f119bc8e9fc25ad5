"""Azure AKS clusters: creating or attaching one with TLS, and enabling or renewing TLS on one that exists.

The TLS settings are written on the cluster row in the same transaction that records the operation, so the
worker that provisions the cluster (or updates it) reads them; the private key is encrypted
(deployments.crypto) the moment it arrives and is never shown again.
"""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import User
from django.db import transaction

from deployments.crypto import encrypt
from deployments.models import Cluster, Operation, OperationKind, Workspace
from deployments.services import Refused, cluster_create
from deployments.services.audit import audit_record
from deployments.services.operations import operation_by_idempotency_key, operation_start
from deployments.states import ACTIVE_OPERATION_STATES, ProvisioningState
from targets.azureml import KIND as AZUREML


def tls_fields(tls: dict[str, str]) -> dict[str, str]:
    """A cluster row's TLS columns from the form's settings (the key encrypted, the other mode's fields
    cleared)."""
    mode = tls.get("tls_mode") or ""
    return {
        "tls_mode": mode,
        "tls_leaf_domain_label": tls.get("tls_leaf_domain_label", "") if mode == "leaf" else "",
        "tls_cname": tls.get("tls_cname", "") if mode == "custom" else "",
        "tls_certificate": tls.get("tls_certificate", "") if mode == "custom" else "",
        "tls_key_encrypted": encrypt(tls["tls_key"]) if mode == "custom" and tls.get("tls_key") else "",
    }


def _tls_audit(fields: dict[str, str]) -> dict[str, str]:
    """What an audit row says about TLS (never the key)."""
    return {
        "tls_mode": fields["tls_mode"] or "none",
        "tls_leaf_domain_label": fields["tls_leaf_domain_label"],
        "tls_cname": fields["tls_cname"],
        **({"tls_key": "set (encrypted)"} if fields["tls_key_encrypted"] else {}),
    }


def azure_cluster_create(
    *,
    user: User,
    name: str,
    workspace: Workspace,
    vm_size: str = "",
    node_count: int = 1,
    cluster_purpose: str = "DevTest",
    location: str = "",
    attach_resource_id: str = "",
    internal_load_balancer: bool = False,
    tls: dict[str, str] | None = None,
    expires_at: datetime | None = None,
    idle_teardown_hours: int | None = None,
    auto_teardown: bool = False,
    idempotency_key: str | None = None,
) -> Operation:
    """Record an AKS cluster (created or attached, with TLS when asked) and start provisioning it."""
    if existing := operation_by_idempotency_key(idempotency_key):
        return existing
    with transaction.atomic():  # the worker starts on commit: it sees the TLS settings
        operation = cluster_create(
            user=user,
            name=name,
            backend=AZUREML,
            workspace=workspace,
            vm_size=vm_size,
            node_count=node_count,
            cluster_purpose=cluster_purpose,
            location=location,
            attach_resource_id=attach_resource_id,
            expires_at=expires_at,
            idle_teardown_hours=idle_teardown_hours,
            auto_teardown=auto_teardown,
            idempotency_key=idempotency_key,
        )
        fields = tls_fields(tls or {})
        if fields["tls_mode"] or internal_load_balancer:
            assert operation.cluster_id is not None  # a provisioning operation always names its cluster
            Cluster.objects.filter(pk=operation.cluster_id).update(
                internal_load_balancer=internal_load_balancer, **fields
            )
            audit_record(
                actor=user,
                action="cluster.tls",
                resource=operation.cluster,
                after={**_tls_audit(fields), "internal_load_balancer": internal_load_balancer},
                message="TLS requested with the cluster",
            )
        return operation


def cluster_tls_enable(
    *,
    user: User,
    cluster: Cluster,
    tls: dict[str, str],
    renew: bool = False,
    idempotency_key: str | None = None,
) -> Operation:
    """Start enabling TLS on a Succeeded AKS cluster, or renewing Microsoft's certificate (renew=True keeps
    the cluster's leaf domain label). v1 no longer renews that certificate by itself."""
    if existing := operation_by_idempotency_key(idempotency_key):
        return existing
    if cluster.backend != AZUREML:
        raise Refused(f"{cluster.name} is not an Azure cluster.")
    if cluster.provisioning_state != ProvisioningState.SUCCEEDED:
        raise Refused(f"{cluster.name} is {cluster.provisioning_state}; TLS needs a Succeeded cluster.")
    if renew:
        if cluster.tls_mode != "leaf":
            raise Refused("Only Microsoft's leaf-domain certificate is renewed here; upload a new one.")
        tls = {"tls_mode": "leaf", "tls_leaf_domain_label": cluster.tls_leaf_domain_label}
    fields = tls_fields(tls)
    if not fields["tls_mode"]:
        raise Refused("Choose Microsoft's certificate or your own.")
    if cluster.internal_load_balancer and fields["tls_mode"] == "leaf":
        raise Refused("An internal load balancer needs your own certificate and CNAME.")
    busy = Operation.objects.filter(cluster=cluster, state__in=ACTIVE_OPERATION_STATES).exists()
    if busy:
        raise Refused(f"{cluster.name} has an operation in progress; try again when it has finished.")
    with transaction.atomic():
        Cluster.objects.filter(pk=cluster.pk).update(**fields)
        audit_record(
            actor=user,
            action="cluster.tls",
            resource=cluster,
            after={**_tls_audit(fields), "renew": renew},
            message="certificate renewal requested" if renew else "TLS requested",
        )
        return operation_start(
            kind=OperationKind.CLUSTER_TLS,
            user=user,
            cluster=cluster,
            params={"renew": renew},
            idempotency_key=idempotency_key,
        )
