"""Cluster (compute target) pages."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from accounts.roles import AuthedRequest, deployer_required
from deployments import selectors
from deployments.forms import ClusterForm, ConfirmForm
from deployments.models import Cluster, Deployment
from deployments.services import Refused, cluster_create, cluster_delete
from deployments.services.deployments import cluster_delete_with_deployments
from deployments.services.expiry import status_of
from deployments.states import ServiceState


@require_GET
def cluster_detail(request: AuthedRequest, pk: int) -> HttpResponse:
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
            # Deployments not yet deleted: with any, Delete lists them on a confirmation page first.
            "deployments_left": cluster.deployments.exclude(state=ServiceState.DELETED).count(),
            "expiry": status_of(cluster),
        },
    )


@deployer_required
def cluster_new(request: AuthedRequest) -> HttpResponse:
    form = ClusterForm(request.POST if request.method == "POST" else None)
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
    return render(
        request, "deployments/cluster_form.html", {"form": form}, status=400 if form.errors else 200
    )


@require_POST
@deployer_required
def cluster_delete_view(request: AuthedRequest, pk: int) -> HttpResponse:
    cluster = get_object_or_404(Cluster, pk=pk)
    form = ConfirmForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The delete form was incomplete; nothing was changed.")
        return redirect("cluster_detail", pk=pk)
    try:
        operation = cluster_delete(
            user=request.user, cluster=cluster, idempotency_key=form.cleaned_data["idempotency_key"]
        )
    except Refused as exc:
        messages.error(request, str(exc))
        return redirect("cluster_detail", pk=pk)
    return redirect("operation_detail", pk=operation.pk)


class TeardownForm(ConfirmForm):
    # The deployments the confirmation page listed: one deployed since is refused, not deleted unseen.
    deployments = forms.ModelMultipleChoiceField(queryset=Deployment.objects.all(), required=False)


@require_POST
@deployer_required
def cluster_teardown_view(request: AuthedRequest, pk: int) -> HttpResponse:
    """Delete a cluster with its deployments: theirs first, each its own operation; then the cluster."""
    cluster = get_object_or_404(Cluster, pk=pk)
    form = TeardownForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The delete form was incomplete; nothing was changed.")
        return redirect("cluster_detail", pk=pk)
    try:
        teardown = cluster_delete_with_deployments(
            user=request.user,
            cluster=cluster,
            expected={deployment.pk for deployment in form.cleaned_data["deployments"]},
            idempotency_key=form.cleaned_data["idempotency_key"],
        )
    except Refused as exc:
        messages.error(request, str(exc))
        return redirect("cluster_detail", pk=pk)
    if teardown.cluster_operation is not None:
        return redirect("operation_detail", pk=teardown.cluster_operation.pk)
    for name, reason in teardown.deletes.refused.items():
        messages.warning(request, f"{name} is not being deleted yet: {reason} Lynx tries again every minute.")
    messages.success(
        request,
        f"Deleting {', '.join(teardown.waiting_for)} first; {cluster.name} is deleted once "
        f"{'it is' if len(teardown.waiting_for) == 1 else 'they are'} gone.",
    )
    return redirect("cluster_detail", pk=pk)
