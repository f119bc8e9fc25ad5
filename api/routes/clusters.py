"""Clusters: list, read, provision (any target, through that target's own form) and delete.

Also the helpers other routers share: `cluster_by_ref` (a name or an id in a path) and the
`Idempotency-Key` header of a long action (`IdempotencyKey`, `idempotency_key_or_new`, `idempotent_replay`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from ninja import HeaderEx, P, Query, Router, Schema

from api.auth import require_deployer
from api.errors import InvalidInput, NotFound
from api.pagination import PageQuery, page
from api.schemas import REFUSALS, OperationStarted, is_id, started
from deployments import selectors
from deployments.backends import target_traits
from deployments.costs import Priced, price_key
from deployments.forms import ClusterBaseForm, ClusterForm, ConfirmForm
from deployments.models import LOCAL_TARGET, Cluster, Operation, OperationKind, VmPrice, Workspace
from deployments.services import Refused, cluster_create, cluster_delete
from deployments.services.operations import operation_by_idempotency_key
from deployments.states import ProvisioningState, ServiceState
from targets.azureml import KIND as AZUREML
from targets.azureml import KUBERNETES_KIND, MANAGED_KIND
from targets.azureml.forms import AzureClusterForm, KubernetesComputeForm, ManagedComputeForm
from targets.azureml.services.clusters import azure_cluster_create

router = Router()

# --- shared by the routers: a resource named in a path, and a long action's Idempotency-Key ---------

IdempotencyKey = HeaderEx[
    str | None,
    P(
        alias="Idempotency-Key",
        description="Send the same key again to get the same operation instead of a second one.",
    ),
]


def cluster_by_ref(ref: str) -> Cluster:
    """The cluster a path names: digits are its id; else its name, the live cluster of that name or, when
    none is live, the newest one (a deleted cluster's name may be reused)."""
    clusters = Cluster.objects.select_related("owner", "workspace")
    if is_id(ref):
        found = clusters.filter(pk=int(ref)).first()
    else:
        named = clusters.filter(name=ref)
        found = (
            named.exclude(provisioning_state=ProvisioningState.DELETED).first()
            or named.order_by("-created_at", "-pk").first()
        )
    if found is None:
        raise NotFound(f"No cluster {ref}." if is_id(ref) else f"No cluster named {ref}.")
    return found


def idempotency_key_or_new(key: str | None) -> str:
    """The caller's Idempotency-Key, or a fresh one (the page mints one each time it renders a form)."""
    return key or uuid.uuid4().hex


def idempotent_replay(
    key: str, *, kind: str, user: User, resource: Cluster | None = None, resource_name: str | None = None
) -> Operation | None:
    """The operation this key already started, when this is the same request again: the same kind, by the
    same person, on the same resource (`resource`, or for a creation the name it asked for). A key already
    used for anything else is refused rather than answered with another request's operation."""
    existing = operation_by_idempotency_key(key)
    if existing is None:
        return None
    same = existing.kind == kind and existing.requested_by_id == user.pk
    if resource is not None:
        same = same and existing.cluster_id == resource.pk
    if resource_name is not None:
        same = same and existing.resource_name == resource_name
    if not same:
        raise Refused("This Idempotency-Key was already used for another request: send a new one.")
    return existing


# --- answers ------------------------------------------------------------------------------------------


class ClusterOut(Schema):
    id: int
    name: str
    target: str  # a key of the targets (GET /targets)
    target_label: str
    state: str  # provisioning_state: Creating | Succeeded | Failed | Deleting | Deleted
    error: str  # why provisioning failed, if it did
    workspace: str | None  # the Azure workspace's name; None on the local target
    location: str
    vm_size: str  # "" on the local target: this machine
    node_count: int
    gpu_count: (
        float  # GPUs per node, as the target reports them (the size's, from the price table, until then)
    )
    gpu_kind: str
    has_gpu: bool
    owner: str | None
    created_at: datetime
    deleted_at: datetime | None
    expires_at: datetime | None
    idle_teardown_hours: int | None
    auto_teardown: bool
    price_per_hour: float | None  # USD now, as the overview shows it; None: no price (or deleted)
    cost_so_far: float | None  # USD since it was created; None: some hours have no price (or deleted)
    deployments: int  # live deployments on it
    url: str  # its page


class ClusterPage(Schema):
    items: list[ClusterOut]
    next_cursor: str | None


class ClusterQuery(PageQuery):
    all: bool = False  # include Deleted clusters


def usd(amount: Decimal | None, places: str = "0.01") -> float | None:
    """Money as the overview rounds it: totals to the cent, rates (places="0.0001") to four digits."""
    return None if amount is None else float(amount.quantize(Decimal(places), rounding=ROUND_HALF_UP))


class _Context:
    """What every cluster of a list shares: the overview's costs and the price table (three queries)."""

    def __init__(self) -> None:
        self.costs: dict[int, Priced] = selectors.costs_summary(now=timezone.now()).by_cluster
        self.prices: dict[str, VmPrice] = selectors.vm_price_map()

    def out(self, cluster: Cluster) -> dict[str, Any]:
        # Until the target reports its GPUs (while Creating), the price table says what the size has: the
        # overview's rule.
        by_size = target_traits(cluster.backend).priced_by_size
        size = self.prices.get(price_key(priced_by_size=by_size, vm_size=cluster.vm_size))
        gpu_count = cluster.gpu_count or (size.gpu_count if size is not None else 0)
        cost = self.costs.get(cluster.pk)
        return {
            "id": cluster.pk,
            "name": cluster.name,
            "target": cluster.backend,
            "target_label": target_traits(cluster.backend).label,
            "state": cluster.provisioning_state,
            "error": cluster.provisioning_errors,
            "workspace": cluster.workspace.name if cluster.workspace is not None else None,
            "location": cluster.location,
            "vm_size": cluster.vm_size,
            "node_count": cluster.node_count,
            "gpu_count": gpu_count,
            "gpu_kind": cluster.gpu_kind or (size.gpu_kind if size is not None else ""),
            "has_gpu": gpu_count > 0,
            "owner": cluster.owner.get_username() if cluster.owner is not None else None,
            "created_at": cluster.created_at,
            "deleted_at": cluster.deleted_at,
            "expires_at": cluster.expires_at,
            "idle_teardown_hours": cluster.idle_teardown_hours,
            "auto_teardown": cluster.auto_teardown,
            "price_per_hour": usd(cost.per_hour_now, "0.0001") if cost is not None else None,
            "cost_so_far": usd(cost.so_far) if cost is not None else None,
            "deployments": getattr(cluster, "live_deployments", 0),
            "url": reverse("cluster_detail", kwargs={"pk": cluster.pk}),
        }


def _with_counts(clusters: QuerySet[Cluster]) -> QuerySet[Cluster]:
    return clusters.select_related("owner", "workspace").annotate(
        live_deployments=Count("deployments", filter=~Q(deployments__state=ServiceState.DELETED))
    )


@router.get(
    "", response={200: ClusterPage, **REFUSALS}, summary="Clusters, oldest first (live ones unless all)"
)
def cluster_list(request: HttpRequest, query: Query[ClusterQuery]) -> dict:
    clusters = Cluster.objects.all()
    if not query.all:
        clusters = clusters.exclude(provisioning_state=ProvisioningState.DELETED)
    return page(_with_counts(clusters), query, _Context().out)


@router.get("/{ref}", response={200: ClusterOut, **REFUSALS}, summary="One cluster, by name or id")
def cluster_get(request: HttpRequest, ref: str) -> dict:
    found = cluster_by_ref(ref)
    return _Context().out(_with_counts(Cluster.objects.filter(pk=found.pk)).get())


# --- provisioning -------------------------------------------------------------------------------------


class ClusterIn(Schema):
    """What the target's page asks. Every target takes the first five; the rest belong to some targets
    only (sending one the target does not take is refused, so a typo is not silently ignored)."""

    name: str
    target: str = LOCAL_TARGET
    expires_in_hours: int | None = None
    idle_teardown_hours: int | None = None
    auto_teardown: bool = False
    # Azure ML targets (azureml, azureml_managed, azureml_k8s)
    workspace: str | None = None  # the workspace's name in Lynx
    vm_size: str | None = None  # azureml (create), azureml_managed: the instance type
    location: str | None = None  # azureml, azureml_managed; empty: the workspace's region
    attach_resource_id: str | None = None  # azureml (attach), azureml_k8s: the AKS cluster's resource ID
    # azureml (AKS through SDK v1) only
    mode: str | None = None  # attach (default) | create
    node_count: int | None = None  # default 1
    cluster_purpose: str | None = None  # DevTest (default) | FastProd
    internal_load_balancer: bool | None = None
    tls_mode: str | None = None  # "" (no TLS) | leaf | custom
    tls_leaf_domain_label: str | None = None
    tls_cname: str | None = None
    tls_certificate: str | None = None  # PEM text (custom TLS)
    tls_key: str | None = None  # PEM text (custom TLS): stored encrypted, never shown again


# The defaults the azureml page shows selected, which a browser therefore sends unless changed.
_PAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    AZUREML: {"mode": AzureClusterForm.ATTACH, "node_count": 1, "cluster_purpose": "DevTest"},
}
_FILE_FIELDS = ("tls_certificate", "tls_key")


def _cluster_form(payload: ClusterIn, idempotency_key: str) -> ClusterBaseForm:
    """The target's form, bound to the request as its page would post it."""
    offered = [kind for kind in settings.LYNX_TARGETS if kind in CLUSTER_PAGES]
    if payload.target not in offered:
        raise InvalidInput({"target": [f"No target {payload.target}: one of {', '.join(offered)}."]})
    form_class = CLUSTER_PAGES[payload.target][0]
    fields = set(form_class.base_fields)
    # A field sent as null counts as not sent, as a blank field on the page.
    sent = {field for field in payload.model_fields_set - {"target"} if getattr(payload, field) is not None}
    if stray := sorted(sent - fields):
        label = target_traits(payload.target).label
        raise InvalidInput({field: [f"{label} does not take {field}."] for field in stray})
    data: dict[str, Any] = {**_PAGE_DEFAULTS.get(payload.target, {}), "idempotency_key": idempotency_key}
    files: dict[str, SimpleUploadedFile] = {}
    for field in sent:
        value = getattr(payload, field)
        if field in _FILE_FIELDS:
            files[field] = SimpleUploadedFile(f"{field}.pem", value.encode())
        elif field == "workspace":
            data[field] = _workspace_pk(value)
        else:
            data[field] = value
    return form_class(data, files)


def _workspace_pk(name: str) -> int:
    workspace = (
        Workspace.objects.filter(name=name).first() or Workspace.objects.filter(name__iexact=name).first()
    )
    if workspace is None:
        raise InvalidInput({"workspace": [f"No workspace named {name}: an admin connects workspaces."]})
    return workspace.pk


def _common(form: ClusterBaseForm, user: User) -> dict[str, Any]:
    """What every target's page passes its service: the name and the teardown rules."""
    data = form.cleaned_data
    return {
        "user": user,
        "name": data["name"],
        "expires_at": form.expires_at(),
        "idle_teardown_hours": data.get("idle_teardown_hours"),
        "auto_teardown": data["auto_teardown"],
        "idempotency_key": data["idempotency_key"],
    }


# Each target's page, as its view calls its service (deployments/views/clusters.py cluster_new,
# targets/azureml/views.py azure_cluster_new, azure_managed_new, azure_kubernetes_new).
def _local_create(form: ClusterBaseForm, user: User) -> Operation:
    return cluster_create(**_common(form, user))


def _aks_create(form: ClusterBaseForm, user: User) -> Operation:
    data = form.cleaned_data
    return azure_cluster_create(
        **_common(form, user),
        workspace=data["workspace"],
        vm_size=data["vm_size"],
        node_count=data["node_count"],
        cluster_purpose=data["cluster_purpose"],
        location=data["location"] or data["workspace"].location,
        attach_resource_id=data["attach_resource_id"],
        internal_load_balancer=bool(data.get("internal_load_balancer")),
        tls=data["tls"],
    )


def _managed_create(form: ClusterBaseForm, user: User) -> Operation:
    data = form.cleaned_data
    return cluster_create(
        **_common(form, user),
        backend=MANAGED_KIND,
        workspace=data["workspace"],
        vm_size=data["vm_size"],
        node_count=1,
        location=data["location"] or data["workspace"].location,
    )


def _kubernetes_create(form: ClusterBaseForm, user: User) -> Operation:
    data = form.cleaned_data
    return cluster_create(
        **_common(form, user),
        backend=KUBERNETES_KIND,
        workspace=data["workspace"],
        attach_resource_id=data["attach_resource_id"],
        location=data["workspace"].location,
    )


# By target key: the form its page asks with, and what its page then calls.
CLUSTER_PAGES: dict[str, tuple[type[ClusterBaseForm], Callable[[ClusterBaseForm, User], Operation]]] = {
    LOCAL_TARGET: (ClusterForm, _local_create),
    AZUREML: (AzureClusterForm, _aks_create),
    MANAGED_KIND: (ManagedComputeForm, _managed_create),
    KUBERNETES_KIND: (KubernetesComputeForm, _kubernetes_create),
}


@router.post(
    "",
    response={202: OperationStarted, **REFUSALS},
    summary="Provision a cluster (or attach one, or record an Azure instance type): starts an operation",
)
def cluster_new(
    request: HttpRequest, response: HttpResponse, payload: ClusterIn, idempotency_key: IdempotencyKey = None
) -> tuple[int, dict]:
    user = require_deployer(request)
    key = idempotency_key_or_new(idempotency_key)
    # The same request again: its operation, before the form would refuse the name its first run took.
    if replay := idempotent_replay(
        key, kind=OperationKind.CLUSTER_PROVISION, user=user, resource_name=payload.name
    ):
        return started(response, replay)
    form = _cluster_form(payload, key)
    if not form.is_valid():
        raise InvalidInput.from_form(form)
    operation = CLUSTER_PAGES[payload.target][1](form, user)
    return started(response, operation, list(getattr(form, "warnings", [])))


@router.delete(
    "/{ref}", response={202: OperationStarted, **REFUSALS}, summary="Delete a cluster: starts an operation"
)
def cluster_remove(
    request: HttpRequest, response: HttpResponse, ref: str, idempotency_key: IdempotencyKey = None
) -> tuple[int, dict]:
    user = require_deployer(request)
    cluster = cluster_by_ref(ref)
    form = ConfirmForm({"idempotency_key": idempotency_key_or_new(idempotency_key)})
    if not form.is_valid():
        raise InvalidInput.from_form(form)
    key = form.cleaned_data["idempotency_key"]
    idempotent_replay(key, kind=OperationKind.CLUSTER_DELETE, user=user, resource=cluster)
    # The service refuses (409) a cluster still provisioning, already going, or with deployments left on it.
    return started(response, cluster_delete(user=user, cluster=cluster, idempotency_key=key))
