"""Pages for the Azure half: workspaces (admins connect them), AKS clusters, an AKS service's keys and logs.

Each view: permission check, form validation, one service call, redirect to the operation it started.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from accounts.roles import AuthedRequest, admin_required, deployer_required
from deployments import selectors
from deployments.crypto import decrypt, mask
from deployments.forms import ConfirmForm
from deployments.models import Cluster, Deployment, Workspace
from deployments.services import Refused, cluster_create
from deployments.services.deployments import deployment_key_regenerate
from targets.azureml import KIND as AZUREML
from targets.azureml import KINDS as AZURE_KINDS
from targets.azureml import KUBERNETES_KIND, MANAGED_KIND
from targets.azureml import selectors as azure_selectors
from targets.azureml.forms import (
    ATTACH_REASON,
    CREATE_WARNING,
    KUBERNETES_REASON,
    MANAGED_REASON,
    TLS_RENEWAL_NOTE,
    AzureClusterForm,
    AzureKeyForm,
    AzureLogsForm,
    AzureTlsForm,
    KubernetesComputeForm,
    ManagedComputeForm,
    WorkspaceForm,
    WorkspaceSecretForm,
)
from targets.azureml.services.clusters import azure_cluster_create, cluster_tls_enable
from targets.azureml.services.sync import azure_sync_request
from targets.azureml.services.workspaces import (
    deployment_azure_logs_fetch,
    workspace_create,
    workspace_secret_set,
    workspace_test,
)

# --- workspaces -------------------------------------------------------------------------------------


@require_GET
def workspace_list(request: AuthedRequest) -> HttpResponse:
    findings = list(azure_selectors.external_resources_open())
    return render(
        request,
        "azure/workspace_list.html",
        {
            "workspaces": azure_selectors.workspaces_overview(),
            "findings": findings,
            "unmanaged_per_hour": azure_selectors.unmanaged_cost_per_hour(findings),
        },
    )


@admin_required
def workspace_new(request: AuthedRequest) -> HttpResponse:
    form = WorkspaceForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            operation = workspace_create(user=request.user, **form.cleaned_data)
        except Refused as exc:
            form.add_error(None, str(exc))
        else:
            return redirect("operation_detail", pk=operation.pk)
    return render(request, "azure/workspace_form.html", {"form": form}, status=400 if form.errors else 200)


@require_GET
def workspace_detail(request: AuthedRequest, pk: int) -> HttpResponse:
    workspace = get_object_or_404(Workspace.objects.select_related("created_by"), pk=pk)
    findings = list(azure_selectors.external_resources_open(workspace))
    return render(
        request,
        "azure/workspace_detail.html",
        {
            "workspace": workspace,
            "clusters": azure_selectors.workspace_clusters(workspace),
            "operations": azure_selectors.workspace_operations(workspace),
            "findings": findings,
            "resolved": azure_selectors.external_resources_resolved(workspace),
            "unmanaged_per_hour": azure_selectors.unmanaged_cost_per_hour(findings),
            "audit": selectors.audit_for("workspace", workspace.pk),
            "test_form": ConfirmForm(),
        },
    )


@require_POST
@admin_required
def workspace_test_view(request: AuthedRequest, pk: int) -> HttpResponse:
    workspace = get_object_or_404(Workspace, pk=pk)
    form = ConfirmForm(request.POST)
    key = form.cleaned_data["idempotency_key"] if form.is_valid() else None
    operation = workspace_test(user=request.user, workspace=workspace, idempotency_key=key)
    return redirect("operation_detail", pk=operation.pk)


@admin_required
def workspace_secret_view(request: AuthedRequest, pk: int) -> HttpResponse:
    workspace = get_object_or_404(Workspace, pk=pk)
    form = WorkspaceSecretForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            operation = workspace_secret_set(user=request.user, workspace=workspace, **form.cleaned_data)
        except Refused as exc:
            form.add_error(None, str(exc))
        else:
            return redirect("operation_detail", pk=operation.pk)
    return render(
        request,
        "azure/workspace_secret_form.html",
        {"form": form, "workspace": workspace},
        status=400 if form.errors else 200,
    )


@require_POST
@admin_required
def workspace_sync_view(request: AuthedRequest, pk: int) -> HttpResponse:
    workspace = get_object_or_404(Workspace, pk=pk)
    azure_sync_request(workspace=workspace)
    messages.info(
        request, f"Listing {workspace.name}'s compute targets and web services; reload in a moment."
    )
    return redirect("workspace_detail", pk=pk)


# --- clusters ---------------------------------------------------------------------------------------


@deployer_required
def azure_cluster_new(request: AuthedRequest) -> HttpResponse:
    initial = {"workspace": request.GET["workspace"]} if request.GET.get("workspace", "").isdigit() else None
    form = AzureClusterForm(request.POST or None, request.FILES or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            operation = azure_cluster_create(
                user=request.user,
                name=data["name"],
                workspace=data["workspace"],
                vm_size=data["vm_size"],
                node_count=data["node_count"],
                cluster_purpose=data["cluster_purpose"],
                location=data["location"] or data["workspace"].location,
                attach_resource_id=data["attach_resource_id"],
                internal_load_balancer=bool(data.get("internal_load_balancer")),
                tls=data["tls"],
                expires_at=form.expires_at(),
                idle_teardown_hours=data.get("idle_teardown_hours"),
                auto_teardown=data["auto_teardown"],
                idempotency_key=data["idempotency_key"],
            )
        except Refused as exc:
            form.add_error(None, str(exc))
        else:
            for warning in form.warnings:
                messages.warning(request, warning)
            return redirect("operation_detail", pk=operation.pk)
    return render(
        request,
        "azure/cluster_form.html",
        {
            "form": form,
            "has_workspaces": Workspace.objects.exists(),
            "attach_reason": ATTACH_REASON,
            "create_warning": CREATE_WARNING,
        },
        status=400 if form.errors else 200,
    )


@deployer_required
def azure_managed_new(request: AuthedRequest) -> HttpResponse:
    """An instance type for managed online endpoints (Azure ML v2): checked with Azure, nothing created."""
    initial = {"workspace": request.GET["workspace"]} if request.GET.get("workspace", "").isdigit() else None
    form = ManagedComputeForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            operation = cluster_create(
                user=request.user,
                name=data["name"],
                backend=MANAGED_KIND,
                workspace=data["workspace"],
                vm_size=data["vm_size"],
                node_count=1,
                location=data["location"] or data["workspace"].location,
                expires_at=form.expires_at(),
                idle_teardown_hours=data.get("idle_teardown_hours"),
                auto_teardown=data["auto_teardown"],
                idempotency_key=data["idempotency_key"],
            )
        except Refused as exc:
            form.add_error(None, str(exc))
        else:
            for warning in form.warnings:
                messages.warning(request, warning)
            return redirect("operation_detail", pk=operation.pk)
    return render(
        request,
        "azure/managed_form.html",
        {"form": form, "has_workspaces": Workspace.objects.exists(), "managed_reason": MANAGED_REASON},
        status=400 if form.errors else 200,
    )


@deployer_required
def azure_kubernetes_new(request: AuthedRequest) -> HttpResponse:
    """Attach an AKS cluster with the Azure ML extension as Kubernetes compute, for v2 online endpoints."""
    initial = {"workspace": request.GET["workspace"]} if request.GET.get("workspace", "").isdigit() else None
    form = KubernetesComputeForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            operation = cluster_create(
                user=request.user,
                name=data["name"],
                backend=KUBERNETES_KIND,
                workspace=data["workspace"],
                attach_resource_id=data["attach_resource_id"],
                location=data["workspace"].location,
                expires_at=form.expires_at(),
                idle_teardown_hours=data.get("idle_teardown_hours"),
                auto_teardown=data["auto_teardown"],
                idempotency_key=data["idempotency_key"],
            )
        except Refused as exc:
            form.add_error(None, str(exc))
        else:
            return redirect("operation_detail", pk=operation.pk)
    return render(
        request,
        "azure/kubernetes_form.html",
        {"form": form, "has_workspaces": Workspace.objects.exists(), "reason": KUBERNETES_REASON},
        status=400 if form.errors else 200,
    )


def _azure_cluster(pk: int, kinds: tuple[str, ...] = (AZUREML,)) -> Cluster:
    return get_object_or_404(Cluster.objects.select_related("workspace").filter(backend__in=kinds), pk=pk)


@require_GET
def azure_cluster(request: AuthedRequest, pk: int) -> HttpResponse:
    """An AKS cluster's Azure facts: Kubernetes version, TLS, and the form to enable or renew TLS; for a
    managed-endpoint instance type, its endpoints."""
    cluster = _azure_cluster(pk, AZURE_KINDS)
    if cluster.backend in (MANAGED_KIND, KUBERNETES_KIND):
        endpoints = cluster.deployments.exclude(state="Deleted").order_by("name")
        return render(request, "azure/managed_azure.html", {"cluster": cluster, "endpoints": endpoints})
    return render(request, "azure/cluster_azure.html", _cluster_context(cluster, AzureTlsForm()))


def _cluster_context(cluster: Cluster, form: AzureTlsForm) -> dict:
    return {
        "cluster": cluster,
        "form": form,
        "renewal_note": TLS_RENEWAL_NOTE,
        "operations": azure_selectors.cluster_tls_operations(cluster),
    }


@require_POST
@deployer_required
def azure_cluster_tls(request: AuthedRequest, pk: int) -> HttpResponse:
    cluster = _azure_cluster(pk)
    form = AzureTlsForm(request.POST, request.FILES)
    renew, tls = False, {}
    if form.is_valid():
        renew = bool(form.cleaned_data.get("renew"))
        if not renew:  # a renewal keeps the cluster's leaf label; otherwise the TLS fields must hold up
            tls = form.clean_tls(internal_load_balancer=cluster.internal_load_balancer)
    if form.is_valid():  # clean_tls adds its errors to the form
        try:
            operation = cluster_tls_enable(
                user=request.user,
                cluster=cluster,
                tls=tls,
                renew=renew,
                idempotency_key=form.cleaned_data["idempotency_key"],
            )
        except Refused as exc:
            form.add_error(None, str(exc))
        else:
            return redirect("operation_detail", pk=operation.pk)
    return render(request, "azure/cluster_azure.html", _cluster_context(cluster, form), status=400)


# --- an AKS deployment: keys and logs ---------------------------------------------------------------


def _azure_deployment(pk: int) -> Deployment:
    return get_object_or_404(
        Deployment.objects.select_related("cluster__workspace", "model").filter(
            cluster__backend__in=AZURE_KINDS
        ),
        pk=pk,
    )


@require_GET
def azure_deployment(request: AuthedRequest, pk: int) -> HttpResponse:
    deployment = _azure_deployment(pk)
    logs = azure_selectors.deployment_latest_logs(deployment)
    return render(
        request,
        "azure/deployment_azure.html",
        {
            "deployment": deployment,
            # Over plain http the Authorization header (key or token) and the data can be read on the way.
            "plain_http": deployment.scoring_uri.startswith("http://"),
            "primary_key_masked": mask(decrypt(deployment.primary_key_encrypted)),
            "secondary_key_masked": mask(decrypt(deployment.secondary_key_encrypted)),
            "operations": azure_selectors.deployment_azure_operations(deployment),
            "logs": logs,
            "log_lines": logs.lines.all()[:2000] if logs else [],
        },
    )


@require_POST
@deployer_required
def azure_key_regenerate(request: AuthedRequest, pk: int) -> HttpResponse:
    deployment = _azure_deployment(pk)
    form = AzureKeyForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose the Primary or the Secondary key; nothing was changed.")
        return redirect("azure_deployment", pk=pk)
    try:
        operation = deployment_key_regenerate(
            user=request.user,
            deployment=deployment,
            key=form.cleaned_data["key"],
            idempotency_key=form.cleaned_data["idempotency_key"] or None,
        )
    except Refused as exc:
        messages.error(request, str(exc))
        return redirect("azure_deployment", pk=pk)
    return redirect("operation_detail", pk=operation.pk)


@require_POST
@deployer_required
def azure_logs(request: AuthedRequest, pk: int) -> HttpResponse:
    deployment = _azure_deployment(pk)
    form = AzureLogsForm(request.POST)
    lines = (form.cleaned_data.get("lines") if form.is_valid() else None) or 200
    try:
        operation = deployment_azure_logs_fetch(
            user=request.user,
            deployment=deployment,
            lines=lines,
            idempotency_key=(form.cleaned_data.get("idempotency_key") if form.is_valid() else None) or None,
        )
    except Refused as exc:
        messages.error(request, str(exc))
        return redirect("azure_deployment", pk=pk)
    return redirect("operation_detail", pk=operation.pk)
