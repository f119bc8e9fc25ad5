"""Deploy, update, roll back, shift traffic, move and delete: each the page's form and service (202)."""

from __future__ import annotations

from datetime import datetime

from django.http import HttpRequest, HttpResponse
from ninja import Query, Schema
from pydantic import ConfigDict

from api.auth import require_deployer
from api.errors import InvalidInput
from api.pagination import PageQuery, page
from api.routes.clusters import IdempotencyKey, idempotency_key_or_new
from api.routes.deployments.common import (
    begin,
    cluster_in_body,
    deployment_by_ref,
    invalid_form,
    model_by_name,
    replayed_operation,
    router,
)
from api.schemas import REFUSALS, OperationStarted, started
from deployments.environments import default_entry_script, default_environment_yaml
from deployments.forms import (
    ConfirmForm,
    DeploymentForm,
    DeploymentUpdateForm,
    MoveForm,
    RollbackForm,
)
from deployments.models import (
    DeploymentRevision,
    OperationKind,
)
from deployments.services import deployment_create, deployment_delete
from deployments.services.deployments import (
    deployment_move,
    deployment_rollback,
    deployment_traffic,
    deployment_update,
)


class StrictSchema(Schema):
    model_config = ConfigDict(extra="forbid")  # a misspelt setting is refused, not silently left out


class DeploymentIn(StrictSchema):
    """A new deployment. What is left out takes the deploy form's default (its entry script and environment
    too)."""

    name: str
    model: str  # the registered model's name
    model_version: int | None = None  # its latest version when left out
    cluster: int | str  # the cluster's name or id
    entry_script: str | None = None
    environment_yaml: str | None = None
    replicas: int = 1
    cpu_cores: float = 1.0
    memory_gb: float = 1.0
    gpu_enabled: bool = False
    gpu_cores: int = 0
    autoscale_enabled: bool = False
    autoscale_min_replicas: int = 1
    autoscale_max_replicas: int = 1
    autoscale_target_utilization: int = 70
    max_batch_size: int = 32
    max_batch_wait_ms: int = 50
    token_auth_enabled: bool = False


class DeploymentPatch(StrictSchema):
    """A new revision: only what is given changes (null is the same as left out)."""

    model: str | None = None
    model_version: int | None = None  # of `model`, or of the model it runs now; latest when left out
    entry_script: str | None = None
    environment_yaml: str | None = None
    replicas: int | None = None
    cpu_cores: float | None = None
    memory_gb: float | None = None
    gpu_enabled: bool | None = None
    gpu_cores: int | None = None
    autoscale_enabled: bool | None = None
    autoscale_min_replicas: int | None = None
    autoscale_max_replicas: int | None = None
    autoscale_target_utilization: int | None = None
    max_batch_size: int | None = None
    max_batch_wait_ms: int | None = None
    token_auth_enabled: bool | None = None
    canary_percent: int | None = None  # below 100: the new revision gets that share beside the current one


class CheckOut(Schema):
    ok: bool
    warnings: list[str]


STARTED_OR_CHECKED = {202: OperationStarted, 200: CheckOut, **REFUSALS}


@router.post(
    "",
    response=STARTED_OR_CHECKED,
    summary="Deploy a model (202); with dry_run=true only check it, as the page's Check button",
)
def deployment_new(
    request: HttpRequest,
    response: HttpResponse,
    payload: DeploymentIn,
    dry_run: bool = False,
    idempotency_key: IdempotencyKey = None,
) -> tuple[int, dict]:
    user = require_deployer(request)
    key = idempotency_key_or_new(idempotency_key)
    replay = replayed_operation(key, kind=OperationKind.SERVICE_DEPLOY, user=user, name=payload.name)
    if replay is not None and not dry_run:
        return started(response, replay)
    model = model_by_name(payload.model, payload.model_version)
    cluster, cluster_errors = cluster_in_body(payload.cluster)
    data = payload.model_dump(exclude={"model_version"})
    data.update(
        model=model.pk,
        cluster=cluster.pk if cluster else None,
        idempotency_key=key,
        # What the deploy page fills in before anyone types.
        entry_script=default_entry_script() if payload.entry_script is None else payload.entry_script,
        environment_yaml=(
            default_environment_yaml() if payload.environment_yaml is None else payload.environment_yaml
        ),
    )
    form = DeploymentForm(data)
    if not form.is_valid() or cluster_errors:
        raise invalid_form(form, cluster_errors)
    if dry_run:
        return 200, {"ok": True, "warnings": form.warnings}
    cleaned = form.cleaned_data
    operation = deployment_create(
        user=user,
        name=cleaned["name"],
        cluster=cleaned["cluster"],
        model=cleaned["model"],
        entry_script=cleaned["entry_script"],
        environment_yaml=cleaned["environment_yaml"],
        idempotency_key=cleaned["idempotency_key"],
        **form.config(),
    )
    return started(response, operation, form.warnings)


@router.patch(
    "/{ref}",
    response=STARTED_OR_CHECKED,
    summary="Update: a new revision with the settings given (202); with dry_run=true only check them",
)
def deployment_patch(
    request: HttpRequest,
    response: HttpResponse,
    ref: str,
    payload: DeploymentPatch,
    dry_run: bool = False,
    idempotency_key: IdempotencyKey = None,
) -> tuple[int, dict]:
    user, deployment, key, replay = begin(request, ref, idempotency_key, OperationKind.SERVICE_UPDATE)
    if replay is not None and not dry_run:
        return started(response, replay)
    # What the update page shows before anyone types: the deployment as it runs now.
    data = dict(DeploymentUpdateForm(deployment=deployment).initial)
    data.update(
        payload.model_dump(exclude_none=True, exclude={"model", "model_version"}), idempotency_key=key
    )
    if payload.model is not None or payload.model_version is not None:
        data["model"] = model_by_name(payload.model or deployment.model.name, payload.model_version).pk
    form = DeploymentUpdateForm(data, deployment=deployment)
    if not form.is_valid():
        raise invalid_form(form)
    if dry_run:
        return 200, {"ok": True, "warnings": form.warnings}
    cleaned = form.cleaned_data
    operation = deployment_update(
        user=user,
        deployment=deployment,
        model=cleaned["model"],
        entry_script=cleaned["entry_script"],
        environment_yaml=cleaned["environment_yaml"],
        idempotency_key=cleaned["idempotency_key"],
        canary_percent=cleaned.get("canary_percent") or 100,
        **form.config(),
    )
    return started(response, operation, form.warnings)


# --- revisions, rollback, traffic, move, delete -------------------------------------------------------------


class RevisionOut(Schema):
    number: int
    current: bool  # the revision the deployment runs (or is rolling to)
    model: str
    model_version: int
    settings: dict
    entry_script: str
    environment_yaml: str
    created_by: str
    created_at: datetime


class RevisionPage(Schema):
    items: list[RevisionOut]
    next_cursor: str | None


@router.get(
    "/{ref}/revisions", response={200: RevisionPage, **REFUSALS}, summary="Its revisions, oldest first"
)
def revision_list(request: HttpRequest, ref: str, query: Query[PageQuery]) -> dict:
    deployment = deployment_by_ref(ref)

    def revision(row: DeploymentRevision) -> dict:
        return {
            "number": row.number,
            "current": row.number == deployment.revision,
            "model": row.model.name,
            "model_version": row.model.version,
            "settings": row.config,
            "entry_script": row.entry_script,
            "environment_yaml": row.environment_yaml,
            "created_by": row.created_by_name,
            "created_at": row.created_at,
        }

    return page(deployment.revisions.select_related("model"), query, revision)


class RollbackIn(Schema):
    revision: int


class TrafficIn(Schema):
    complete: bool  # true: all traffic to the canary's revision; false: all back to the one before


class MoveIn(Schema):
    cluster: int | str  # a cluster of another cloud target
    name: str  # the new deployment's name


@router.post(
    "/{ref}/rollback", response={202: OperationStarted, **REFUSALS}, summary="Roll back to a revision (202)"
)
def deployment_rollback_start(
    request: HttpRequest,
    response: HttpResponse,
    ref: str,
    payload: RollbackIn,
    idempotency_key: IdempotencyKey = None,
) -> tuple[int, dict]:
    user, deployment, key, replay = begin(request, ref, idempotency_key, OperationKind.SERVICE_UPDATE)
    if replay is not None:
        return started(response, replay)
    form = RollbackForm({"revision": payload.revision, "idempotency_key": key})
    if not form.is_valid():
        raise invalid_form(form)
    number = form.cleaned_data["revision"]
    # The service says so too, as a refusal (409); here it is what it is, a revision asked for that is not.
    if not deployment.revisions.filter(number=number).exists():
        raise InvalidInput({"revision": [f"{deployment.name} has no revision {number}."]})
    operation = deployment_rollback(user=user, deployment=deployment, number=number, idempotency_key=key)
    return started(response, operation)


@router.post(
    "/{ref}/traffic",
    response={202: OperationStarted, **REFUSALS},
    summary="Complete a canary (all traffic to its revision) or roll it back (202)",
)
def deployment_traffic_start(
    request: HttpRequest,
    response: HttpResponse,
    ref: str,
    payload: TrafficIn,
    idempotency_key: IdempotencyKey = None,
) -> tuple[int, dict]:
    user, deployment, key, replay = begin(request, ref, idempotency_key, OperationKind.SERVICE_TRAFFIC)
    if replay is not None:
        return started(response, replay)
    form = ConfirmForm({"idempotency_key": key})
    if not form.is_valid():
        raise invalid_form(form)
    operation = deployment_traffic(
        user=user, deployment=deployment, complete=payload.complete, idempotency_key=key
    )
    return started(response, operation)


@router.post(
    "/{ref}/move",
    response={202: OperationStarted, **REFUSALS},
    summary="Deploy its revision to a cluster of another target (Azure ML v1 to v2) as a new deployment",
)
def deployment_move_start(
    request: HttpRequest,
    response: HttpResponse,
    ref: str,
    payload: MoveIn,
    idempotency_key: IdempotencyKey = None,
) -> tuple[int, dict]:
    user = require_deployer(request)
    deployment = deployment_by_ref(ref)
    key = idempotency_key_or_new(idempotency_key)
    # A move starts the new deployment's deploy: a retry is known by the new name.
    if replay := replayed_operation(key, kind=OperationKind.SERVICE_DEPLOY, user=user, name=payload.name):
        return started(response, replay)
    cluster, cluster_errors = cluster_in_body(payload.cluster)
    form = MoveForm(
        {"cluster": cluster.pk if cluster else None, "name": payload.name, "idempotency_key": key},
        deployment=deployment,
    )
    if not form.is_valid() or cluster_errors:
        raise invalid_form(form, cluster_errors)
    cluster = form.cleaned_data["cluster"]
    operation = deployment_move(
        user=user, deployment=deployment, cluster=cluster, name=payload.name, idempotency_key=key
    )
    return started(response, operation)


@router.delete("/{ref}", response={202: OperationStarted, **REFUSALS}, summary="Delete a deployment (202)")
def deployment_remove(
    request: HttpRequest, response: HttpResponse, ref: str, idempotency_key: IdempotencyKey = None
) -> tuple[int, dict]:
    user, deployment, key, replay = begin(request, ref, idempotency_key, OperationKind.SERVICE_DELETE)
    if replay is not None:
        return started(response, replay)
    form = ConfirmForm({"idempotency_key": key})
    if not form.is_valid():
        raise invalid_form(form)
    return started(response, deployment_delete(user=user, deployment=deployment, idempotency_key=key))


# --- keys and logs ----------------------------------------------------------------------------------------
