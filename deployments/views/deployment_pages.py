"""A deployment's pages: deploy, the deployment page (overview, keys, logs, test, history), update, rollback,
delete."""

from __future__ import annotations

import re
from collections.abc import Callable

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from accounts.roles import AuthedRequest, deployer_required
from deployments import selectors
from deployments.backends import target_traits
from deployments.crypto import decrypt, mask
from deployments.environments import check_environment, runtime_version
from deployments.forms import (
    ConfirmForm,
    DeploymentForm,
    DeploymentUpdateForm,
    KeyForm,
    MoveForm,
    RollbackForm,
    ServiceConfigForm,
)
from deployments.models import AuditEvent, Deployment, DeploymentRevision, Operation
from deployments.services import Refused, deployment_create, deployment_delete
from deployments.services.deployments import (
    UPDATABLE_STATES,
    canary_of,
    deployment_logs,
    deployment_move,
    deployment_rollback,
    deployment_traffic,
    deployment_update,
)

from .uploads import streamed_uploads

TEXT_UPLOADS_MAX_BYTES = 1024 * 1024  # score.py and a conda file; the forms check each against 512 KiB


def _deployment(pk: int) -> Deployment:
    return get_object_or_404(Deployment.objects.select_related("cluster", "model", "owner"), pk=pk)


def _flash_warnings(request: HttpRequest, warnings: list[str]) -> None:
    for warning in warnings:
        messages.warning(request, warning)


def _check_or_start(
    request: HttpRequest, form: ServiceConfigForm, start: Callable[[dict], Operation]
) -> tuple[HttpResponse | None, bool]:
    """A valid POST of the deploy or update form: with "Check", only say what the checks found (checked);
    otherwise start the operation and answer with the redirect to it. A refusal becomes a form error."""
    if request.method != "POST" or not form.is_valid():
        return None, False
    if "check" in request.POST:
        return None, True
    try:
        operation = start(form.cleaned_data)
    except Refused as exc:
        form.add_error(None, str(exc))
        return None, False
    _flash_warnings(request, form.warnings)
    return redirect("operation_detail", pk=operation.pk), False


@deployer_required
@streamed_uploads(TEXT_UPLOADS_MAX_BYTES)
def deployment_new(request: AuthedRequest) -> HttpResponse:
    # "Deploy to it" on a cluster's page, "Deploy this version" on a model's: the form starts from that one.
    wanted = ("cluster", "model")
    initial = {name: request.GET[name] for name in wanted if request.GET.get(name, "").isdigit()}
    if request.method == "POST":
        form = DeploymentForm(request.POST, request.FILES)
    else:
        form = DeploymentForm(initial=initial)
    started, checked = _check_or_start(
        request,
        form,
        lambda data: deployment_create(
            user=request.user,
            name=data["name"],
            cluster=data["cluster"],
            model=data["model"],
            entry_script=data["entry_script"],
            environment_yaml=data["environment_yaml"],
            idempotency_key=data["idempotency_key"],
            **form.config(),
        ),
    )
    if started:
        return started
    return render(
        request,
        "deployments/deployment_form.html",
        {"form": form, "checked": checked, "tensorflow_version": runtime_version("tensorflow")},
        status=400 if form.errors else 200,
    )


@require_GET
def deployment_detail(request: AuthedRequest, pk: int) -> HttpResponse:
    deployment = _deployment(pk)
    environment = check_environment(deployment.environment_yaml)
    traffic = {str(k): int(v) for k, v in (deployment.stats.get("traffic") or {}).items()}
    move_form = MoveForm(deployment=deployment)
    return render(
        request,
        "deployments/deployment_detail.html",
        {
            "deployment": deployment,
            "primary_key_masked": mask(decrypt(deployment.primary_key_encrypted)),
            "secondary_key_masked": mask(decrypt(deployment.secondary_key_encrypted)),
            "key_form": KeyForm(),
            "operations": deployment.operations.order_by("-created_at")[:20],
            "audit": selectors.audit_for("deployment", deployment.pk),
            "revisions": _revisions_labelled(deployment),
            "scoring_runs": deployment.scoring_runs.defer("thumbnail", "response_excerpt")[:20],
            "logs": deployment_logs(deployment),
            "environment_warnings": environment.warnings + environment.errors,
            "tensorflow_version": runtime_version("tensorflow"),
            "updatable": deployment.state in UPDATABLE_STATES,
            "delete_form": ConfirmForm(),
            "rollback_form": ConfirmForm(),
            "traits": target_traits(deployment.cluster.backend),
            "traffic": sorted(
                ((int(rev) if rev.isdigit() else rev, share) for rev, share in traffic.items()), key=str
            ),
            "canary": canary_of(deployment),
            # One form (one idempotency key) per button: Roll back after Complete is a second request.
            "complete_form": ConfirmForm(),
            "rollback_traffic_form": ConfirmForm(),
            "move_form": move_form,
            # Evaluated once each, whatever the page shows: the page's queries do not depend on the data.
            "move_choices": move_form.destinations(),
            "moved_to": list(deployment.moved_to.exclude(state="Deleted").select_related("cluster")),
        },
    )


# deployment_rollback's audit message; the revision rolled back to is not stored elsewhere.
ROLLBACK_MESSAGE = re.compile(r"^rollback to revision (\d+)")


def _revisions_labelled(deployment: Deployment, limit: int = 50) -> list[DeploymentRevision]:
    """The newest revisions, each made by a rollback carrying `rollback_of`: the revision it went back to."""
    revisions = list(deployment.revisions.select_related("model").order_by("-number")[:limit])
    rollbacks: dict[int, int] = {}
    for before, after, message in AuditEvent.objects.filter(
        resource_type="deployment", resource_id=deployment.pk, action="deployment.rollback"
    ).values_list("before", "after", "message"):
        match = ROLLBACK_MESSAGE.match(message)
        made = after.get("revision")
        # A Failed deployment rolled back to its own configuration is deployed again as the same revision.
        if match and isinstance(made, int) and made != before.get("revision"):
            rollbacks[made] = int(match.group(1))
    for revision in revisions:
        revision.rollback_of = rollbacks.get(revision.number)  # type: ignore[attr-defined]
    return revisions


@require_GET
def deployment_status(request: AuthedRequest, pk: int) -> HttpResponse:
    """The part of the deployment page that refreshes itself."""
    return render(request, "deployments/_deployment_status.html", {"deployment": _deployment(pk)})


@require_GET
def deployment_logs_part(request: AuthedRequest, pk: int) -> HttpResponse:
    """The last lines of each replica's log; the page reloads this every few seconds."""
    deployment = _deployment(pk)
    return render(
        request,
        "deployments/_deployment_logs.html",
        {"deployment": deployment, "logs": deployment_logs(deployment)},
    )


@deployer_required
@streamed_uploads(TEXT_UPLOADS_MAX_BYTES)
def deployment_update_view(request: AuthedRequest, pk: int) -> HttpResponse:
    deployment = _deployment(pk)
    if request.method == "POST":
        form = DeploymentUpdateForm(request.POST, request.FILES, deployment=deployment)
    else:
        form = DeploymentUpdateForm(deployment=deployment)
    started, checked = _check_or_start(
        request,
        form,
        lambda data: deployment_update(
            user=request.user,
            deployment=deployment,
            model=data["model"],
            entry_script=data["entry_script"],
            environment_yaml=data["environment_yaml"],
            idempotency_key=data["idempotency_key"],
            canary_percent=data.get("canary_percent") or 100,
            **form.config(),
        ),
    )
    if started:
        return started
    return render(
        request,
        "deployments/deployment_update.html",
        {
            "deployment": deployment,
            "form": form,
            "checked": checked,
            "traits": target_traits(deployment.cluster.backend),
            "updatable": deployment.state in UPDATABLE_STATES,
            "tensorflow_version": runtime_version("tensorflow"),
        },
        status=400 if form.errors else 200,
    )


@require_POST
@deployer_required
def deployment_rollback_view(request: AuthedRequest, pk: int) -> HttpResponse:
    deployment = _deployment(pk)
    form = RollbackForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The rollback form was incomplete; nothing was changed.")
        return redirect(deployment_history_url(deployment))
    try:
        operation = deployment_rollback(
            user=request.user,
            deployment=deployment,
            number=form.cleaned_data["revision"],
            idempotency_key=form.cleaned_data["idempotency_key"],
        )
    except Refused as exc:
        messages.error(request, str(exc))
        return redirect(deployment_history_url(deployment))
    return redirect("operation_detail", pk=operation.pk)


@require_POST
@deployer_required
def deployment_traffic_view(request: AuthedRequest, pk: int) -> HttpResponse:
    """Complete a canary (all traffic to the new revision) or roll it back (all to the one before)."""
    deployment = _deployment(pk)
    form = ConfirmForm(request.POST)
    action = request.POST.get("action")
    if not form.is_valid() or action not in ("complete", "rollback"):
        messages.error(request, "The traffic form was incomplete; nothing was changed.")
        return redirect("deployment_detail", pk=deployment.pk)
    try:
        operation = deployment_traffic(
            user=request.user,
            deployment=deployment,
            complete=action == "complete",
            idempotency_key=form.cleaned_data["idempotency_key"],
        )
    except Refused as exc:
        messages.error(request, str(exc))
        return redirect("deployment_detail", pk=deployment.pk)
    return redirect("operation_detail", pk=operation.pk)


@require_POST
@deployer_required
def deployment_move_view(request: AuthedRequest, pk: int) -> HttpResponse:
    """Deploy this deployment's revision to another target (Azure ML v1 to v2); both answer until the owner
    deletes this one."""
    deployment = _deployment(pk)
    form = MoveForm(request.POST, deployment=deployment)
    if not form.is_valid():
        for errors in form.errors.values():
            messages.error(request, " ".join(str(error) for error in errors))
        return redirect(f"{reverse('deployment_detail', args=[deployment.pk])}#move")
    try:
        operation = deployment_move(
            user=request.user,
            deployment=deployment,
            cluster=form.cleaned_data["cluster"],
            name=form.cleaned_data["name"],
            idempotency_key=form.cleaned_data["idempotency_key"],
        )
    except Refused as exc:
        messages.error(request, str(exc))
        return redirect(f"{reverse('deployment_detail', args=[deployment.pk])}#move")
    return redirect("operation_detail", pk=operation.pk)


def deployment_history_url(deployment: Deployment) -> str:
    return reverse("deployment_detail", args=[deployment.pk]) + "#history"


@require_POST
@deployer_required
def deployment_delete_view(request: AuthedRequest, pk: int) -> HttpResponse:
    deployment = _deployment(pk)
    form = ConfirmForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The delete form was incomplete; nothing was changed.")
        return redirect("deployment_detail", pk=pk)
    try:
        operation = deployment_delete(
            user=request.user, deployment=deployment, idempotency_key=form.cleaned_data["idempotency_key"]
        )
    except Refused as exc:
        messages.error(request, str(exc))
        return redirect("deployment_detail", pk=pk)
    return redirect("operation_detail", pk=operation.pk)
