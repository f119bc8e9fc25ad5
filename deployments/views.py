"""Pages for clusters, deployments, models and operations: permission, form, one service call, redirect."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from dashboard.roles import deployer_required
from deployments import selectors
from deployments.crypto import decrypt, mask
from deployments.environments import runtime_version
from deployments.forms import ClusterForm, ConfirmForm, DeploymentForm
from deployments.models import Cluster, Deployment, Operation, RegisteredModel
from deployments.services import Refused, cluster_create, cluster_delete, deployment_create, deployment_delete


@require_GET
def cluster_detail(request: HttpRequest, pk: int) -> HttpResponse:
    cluster = get_object_or_404(Cluster.objects.select_related("owner", "workspace"), pk=pk)
    return render(
        request,
        "deployments/cluster_detail.html",
        {
            "cluster": cluster,
            "deployments": cluster.deployments.select_related("model", "owner").order_by("-created_at")[:100],
            "operations": cluster.operations.filter(deployment=None).order_by("-created_at")[:20],
            "audit": selectors.audit_for("cluster", cluster.pk),
            "delete_form": ConfirmForm(),
        },
    )


@deployer_required
def cluster_new(request: HttpRequest) -> HttpResponse:
    form = ClusterForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            operation = cluster_create(
                user=request.user,
                name=form.cleaned_data["name"],
                expires_at=form.expires_at(),
                idle_teardown_hours=form.cleaned_data.get("idle_teardown_hours"),
                auto_teardown=form.cleaned_data["auto_teardown"],
                idempotency_key=form.cleaned_data["idempotency_key"],
            )
        except Refused as exc:
            form.add_error(None, str(exc))
        else:
            return redirect("operation_detail", pk=operation.pk)
    return render(request, "deployments/cluster_form.html", {"form": form}, status=400 if form.errors else 200)


@require_POST
@deployer_required
def cluster_delete_view(request: HttpRequest, pk: int) -> HttpResponse:
    cluster = get_object_or_404(Cluster, pk=pk)
    form = ConfirmForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The delete form was incomplete; nothing was changed.")
        return redirect("cluster_detail", pk=pk)
    try:
        operation = cluster_delete(user=request.user, cluster=cluster, idempotency_key=form.cleaned_data["idempotency_key"])
    except Refused as exc:
        messages.error(request, str(exc))
        return redirect("cluster_detail", pk=pk)
    return redirect("operation_detail", pk=operation.pk)


@deployer_required
def deployment_new(request: HttpRequest) -> HttpResponse:
    form = DeploymentForm(request.POST or None, initial={"cluster": request.GET.get("cluster")} if request.GET.get("cluster") else None)
    if request.method == "POST" and form.is_valid():
        try:
            operation = deployment_create(
                user=request.user,
                name=form.cleaned_data["name"],
                cluster=form.cleaned_data["cluster"],
                model=form.cleaned_data["model"],
                entry_script=form.cleaned_data["entry_script"],
                environment_yaml=form.cleaned_data["environment_yaml"],
                idempotency_key=form.cleaned_data["idempotency_key"],
                **form.config(),
            )
        except Refused as exc:
            form.add_error(None, str(exc))
        else:
            return redirect("operation_detail", pk=operation.pk)
    return render(
        request,
        "deployments/deployment_form.html",
        {"form": form, "tensorflow_version": runtime_version("tensorflow")},
        status=400 if form.errors else 200,
    )


def _deployment(pk: int) -> Deployment:
    return get_object_or_404(Deployment.objects.select_related("cluster", "model", "owner"), pk=pk)


@require_GET
def deployment_detail(request: HttpRequest, pk: int) -> HttpResponse:
    deployment = _deployment(pk)
    return render(
        request,
        "deployments/deployment_detail.html",
        {
            "deployment": deployment,
            "primary_key_masked": mask(decrypt(deployment.primary_key_encrypted)),
            "secondary_key_masked": mask(decrypt(deployment.secondary_key_encrypted)),
            "operations": deployment.operations.order_by("-created_at")[:20],
            "audit": selectors.audit_for("deployment", deployment.pk),
            "delete_form": ConfirmForm(),
        },
    )


@require_GET
def deployment_status(request: HttpRequest, pk: int) -> HttpResponse:
    """The part of the deployment page that refreshes itself."""
    return render(request, "deployments/_deployment_status.html", {"deployment": _deployment(pk)})


@require_POST
@deployer_required
def deployment_delete_view(request: HttpRequest, pk: int) -> HttpResponse:
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


@require_GET
def operation_list(request: HttpRequest) -> HttpResponse:
    operations = Operation.objects.order_by("-created_at")[:200]
    return render(request, "deployments/operation_list.html", {"operations": operations})


@require_GET
def operation_detail(request: HttpRequest, pk: int) -> HttpResponse:
    operation = get_object_or_404(Operation.objects.select_related("cluster", "deployment"), pk=pk)
    return render(
        request, "deployments/operation_detail.html", {"operation": operation, "lines": operation.lines.all()[:2000]}
    )


@require_GET
def operation_progress(request: HttpRequest, pk: int) -> JsonResponse:
    """Live progress: state, percentage and the log lines after `after` (an id)."""
    operation = get_object_or_404(Operation, pk=pk)
    after = int(request.GET.get("after") or 0)
    lines = list(operation.lines.filter(id__gt=after).values("id", "created_at", "text")[:500])
    target = ""
    if operation.deployment_id:
        target = f"/deployments/{operation.deployment_id}/"
    elif operation.cluster_id:
        target = f"/clusters/{operation.cluster_id}/"
    return JsonResponse(
        {
            "state": operation.state,
            "progress": operation.progress,
            "finished": operation.is_finished,
            "error": operation.error,
            "resource_url": target,
            "lines": [{"id": line["id"], "at": line["created_at"].strftime("%H:%M:%S"), "text": line["text"]} for line in lines],
        }
    )


@require_GET
def model_list(request: HttpRequest) -> HttpResponse:
    models = RegisteredModel.objects.select_related("registered_by").order_by("name", "-version")
    return render(request, "deployments/model_list.html", {"models": models})
