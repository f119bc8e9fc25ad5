"""What the deployment endpoints share: the router, finding a deployment (or its cluster and model) by id or
name, the page's form errors as a 400, an Idempotency-Key's replay, and the deployment's JSON."""

from __future__ import annotations

from datetime import datetime

from django import forms
from django.contrib.auth.models import User
from django.http import HttpRequest
from django.urls import reverse
from ninja import Query, Router, Schema

from api.auth import require_deployer
from api.errors import InvalidInput, NotFound
from api.pagination import PageQuery, page
from api.routes.clusters import cluster_by_ref, idempotency_key_or_new
from api.schemas import REFUSALS, is_id
from deployments.models import (
    Cluster,
    Deployment,
    Operation,
    RegisteredModel,
)
from deployments.services import Refused
from deployments.services.deployments import (
    CONFIG_FIELDS,
    canary_of,
)
from deployments.services.operations import operation_by_idempotency_key
from deployments.states import ProvisioningState, ServiceState

router = Router()
MAX_LOG_LINES = 5000


# --- paths and bodies name a deployment, a cluster or a model: by id or by name ------------------------


def deployment_by_ref(ref: str) -> Deployment:
    """`{ref}`: digits are an id; a name is the live deployment of that name, else the newest one."""
    rows = Deployment.objects.select_related("cluster", "model", "owner")
    if is_id(ref):
        found = rows.filter(pk=int(ref)).first()
    else:
        named = rows.filter(name=ref)
        found = (
            named.exclude(state=ServiceState.DELETED).first() or named.order_by("-created_at", "-pk").first()
        )
    if found is None:
        raise NotFound(f"No deployment {ref}." if is_id(ref) else f"No deployment named {ref}.")
    return found


def cluster_in_body(ref: int | str) -> tuple[Cluster | None, dict[str, list[str]]]:
    """A cluster named in a body: unknown is bad input (400), not a missing resource. The forms offer only
    Succeeded clusters ("Select a valid choice"): say what is wrong with one that is not."""
    try:
        cluster = cluster_by_ref(str(ref))
    except NotFound as exc:
        return None, {"cluster": [str(exc)]}
    if cluster.provisioning_state != ProvisioningState.SUCCEEDED:
        state = cluster.provisioning_state
        return cluster, {"cluster": [f"{cluster.name} is {state}; deploy to a cluster that is Succeeded."]}
    return cluster, {}


def model_by_name(name: str, version: int | None) -> RegisteredModel:
    """A registered model's version: the one asked for, else its latest."""
    versions = RegisteredModel.objects.filter(name=name).order_by("-version")
    found = versions.first() if version is None else versions.filter(version=version).first()
    if found is None and version is not None and versions.exists():
        known = ", ".join(str(v) for v in versions.values_list("version", flat=True))
        raise InvalidInput({"model_version": [f"{name} has no version {version} (it has {known})."]})
    if found is None:
        raise InvalidInput({"model": [f"No model named {name}."]})
    return found


def invalid_form(form: forms.Form, first: dict[str, list[str]] | None = None) -> InvalidInput:
    """The form's errors, after `first`: a lookup's own message says more than "Select a valid choice"."""
    errors = dict(first or {})
    for field, messages in InvalidInput.from_form(form).errors.items():
        errors.setdefault(field, messages)
    return InvalidInput(errors)


def replayed_operation(
    key: str, *, kind: str, user: User, deployment: Deployment | None = None, name: str = ""
) -> Operation | None:
    """The operation this Idempotency-Key already started, when it is the same request again (same person,
    kind and deployment, or new name); asked before the form, which would refuse a retried deploy's name as
    taken. A key used for anything else is refused rather than answered with another request's operation."""
    existing = operation_by_idempotency_key(key)
    if existing is None:
        return None
    same = existing.deployment_id == deployment.pk if deployment else existing.resource_name == name
    if existing.kind != kind or existing.requested_by_id != user.pk or not same:
        raise Refused("This Idempotency-Key was already used for another request: send a new one.")
    return existing


def begin(
    request: HttpRequest, ref: str, idempotency_key: str | None, kind: str
) -> tuple[User, Deployment, str, Operation | None]:
    """What every long action on a deployment starts with: the role first, as the page's decorator; then the
    deployment, the key and the operation a retry of the same request already started."""
    user = require_deployer(request)
    deployment = deployment_by_ref(ref)
    key = idempotency_key_or_new(idempotency_key)
    return user, deployment, key, replayed_operation(key, kind=kind, user=user, deployment=deployment)


# --- what a deployment looks like -----------------------------------------------------------------------


class CanaryOut(Schema):
    percent: int  # the share of the deployment's revision
    revision: int
    previous_revision: int  # serves the rest until the canary is completed or rolled back


class DeploymentOut(Schema):
    id: int
    name: str
    state: str  # Transitioning | Healthy | Unhealthy | Failed | Deleting | Deleted
    error: str
    url: str  # the deployment's page
    cluster: str
    target: str
    model: str
    model_version: int
    revision: int
    scoring_uri: str
    swagger_uri: str | None
    replicas: int
    cpu_cores: float
    memory_gb: float
    gpu_enabled: bool
    gpu_cores: int
    autoscale_enabled: bool
    autoscale_min_replicas: int
    autoscale_max_replicas: int
    autoscale_target_utilization: int
    max_batch_size: int
    max_batch_wait_ms: int
    token_auth_enabled: bool
    traffic: dict[str, int] | None  # revision → percent, on targets that split traffic
    canary: CanaryOut | None
    moved_from: str | None
    owner: str | None
    created_at: datetime
    updated_at: datetime  # its state last changed: every deploy, update, rollback and delete changes it
    deleted_at: datetime | None
    last_scored_at: datetime | None


class DeploymentDetailOut(DeploymentOut):
    entry_script: str
    environment_yaml: str


class DeploymentPage(Schema):
    items: list[DeploymentOut]
    next_cursor: str | None


def deployment_out(deployment: Deployment) -> dict:
    traffic = {str(k): int(v) for k, v in (deployment.stats.get("traffic") or {}).items()}
    canary = canary_of(deployment)
    return {
        "id": deployment.pk,
        "name": deployment.name,
        "state": deployment.state,
        "error": deployment.error,
        "url": reverse("deployment_detail", args=[deployment.pk]),
        "cluster": deployment.cluster.name,
        "target": deployment.cluster.backend,
        "model": deployment.model.name,
        "model_version": deployment.model.version,
        "revision": deployment.revision,
        "scoring_uri": deployment.scoring_uri,
        "swagger_uri": deployment.swagger_uri or None,
        **{field: getattr(deployment, field) for field in CONFIG_FIELDS},
        "traffic": traffic or None,
        "canary": (
            {"percent": canary[0], "revision": deployment.revision, "previous_revision": canary[1]}
            if canary
            else None
        ),
        "moved_from": deployment.moved_from.name if deployment.moved_from else None,
        "owner": deployment.owner.get_username() if deployment.owner else None,
        "created_at": deployment.created_at,
        "updated_at": deployment.state_changed_at,
        "deleted_at": deployment.deleted_at,
        "last_scored_at": deployment.last_scored_at,
    }


LIST_FIELDS = (
    "id",
    "name",
    "state",
    "error",
    "revision",
    "scoring_uri",
    "swagger_uri",
    *CONFIG_FIELDS,
    "stats",
    "created_at",
    "state_changed_at",
    "deleted_at",
    "last_scored_at",
    "cluster__name",
    "cluster__backend",
    "model__name",
    "model__version",
    "owner__username",
    "moved_from__name",
)


class DeploymentQuery(PageQuery):
    all: bool = False  # include Deleted deployments
    cluster: str = ""  # the cluster's name (or id)
    owner: str = ""  # the owner's username


@router.get("", response={200: DeploymentPage, **REFUSALS}, summary="Deployments, oldest first (live ones)")
def deployment_list(request: HttpRequest, query: Query[DeploymentQuery]) -> dict:
    # Only what deployment_out reads: the rest of four joined rows (scripts, JSON the list does not show) was
    # most of a page's time at 10,000 deployments.
    rows = Deployment.objects.select_related("cluster", "model", "owner", "moved_from").only(*LIST_FIELDS)
    if not query.all:
        rows = rows.exclude(state=ServiceState.DELETED)
    if query.cluster:
        rows = (
            rows.filter(cluster_id=int(query.cluster))
            if is_id(query.cluster)
            else rows.filter(cluster__name=query.cluster)
        )
    if query.owner:
        rows = rows.filter(owner__username=query.owner)
    return page(rows, query, deployment_out)


@router.get(
    "/{ref}",
    response={200: DeploymentDetailOut, **REFUSALS},
    url_name="deployment_get",
    summary="One deployment, with its entry script and environment",
)
def deployment_get(request: HttpRequest, ref: str) -> dict:
    deployment = deployment_by_ref(ref)
    return {
        **deployment_out(deployment),
        "entry_script": deployment.entry_script,
        "environment_yaml": deployment.environment_yaml,
    }


# --- deploy and update -----------------------------------------------------------------------------------
