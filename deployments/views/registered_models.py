"""Registered models: list, one version, and registering an uploaded SavedModel."""

from __future__ import annotations

from pathlib import Path

from django.contrib import messages
from django.db.models import Prefetch
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET

from accounts.roles import AuthedRequest, deployer_required
from deployments.forms import ModelUploadForm
from deployments.model_archives import LABELS_MAX_BYTES, human_size, upload_max_bytes
from deployments.models import Deployment, RegisteredModel
from deployments.services import Refused
from deployments.services.registered_models import model_upload
from deployments.states import ServiceState

from .uploads import streamed_uploads, too_large


def _live_deployments() -> Prefetch:
    alive = Deployment.objects.exclude(state=ServiceState.DELETED).select_related("cluster").order_by("name")
    return Prefetch("deployments", queryset=alive, to_attr="live_deployments")


@require_GET
def model_list(request: AuthedRequest) -> HttpResponse:
    models = (
        RegisteredModel.objects.select_related("registered_by")
        .prefetch_related(_live_deployments())
        .order_by("name", "-version")
    )
    return render(request, "deployments/model_list.html", {"models": models})


@require_GET
def model_detail(request: AuthedRequest, pk: int) -> HttpResponse:
    model = get_object_or_404(
        RegisteredModel.objects.select_related("registered_by").prefetch_related(_live_deployments()), pk=pk
    )
    versions = (
        RegisteredModel.objects.filter(name=model.name).only("pk", "name", "version").order_by("-version")
    )
    labels = [line for line in model.labels.splitlines() if line.strip()]
    return render(
        request, "deployments/model_detail.html", {"model": model, "versions": versions, "labels": labels}
    )


@deployer_required
@streamed_uploads(upload_max_bytes, field_limits={"labels": LABELS_MAX_BYTES})
def model_new(request: AuthedRequest) -> HttpResponse:
    initial = {"name": request.GET["name"]} if request.GET.get("name") else None
    if request.method == "POST":
        form = ModelUploadForm(request.POST, request.FILES)
    else:
        form = ModelUploadForm(initial=initial)
    if request.method == "POST":
        if too_large(request, "archive"):
            form.add_error(
                "archive",
                f"The archive is over the {human_size(upload_max_bytes())} upload limit; nothing was kept.",
            )
        elif form.is_valid():
            archive = form.cleaned_data["archive"]
            labels = form.cleaned_data.get("labels")
            try:
                model, notes = model_upload(
                    user=request.user,
                    name=form.cleaned_data["name"],
                    archive=Path(archive.temporary_file_path()),
                    archive_name=archive.name,
                    labels=labels.read(LABELS_MAX_BYTES + 1) if labels else None,
                    description=form.cleaned_data["description"],
                )
            except Refused as exc:
                form.add_error("archive", str(exc))
            else:
                messages.success(request, f"Registered {model.name} version {model.version}.")
                for note in notes:
                    messages.warning(request, note)
                return redirect("model_detail", pk=model.pk)
    return render(
        request,
        "deployments/model_form.html",
        {"form": form, "max_size": human_size(upload_max_bytes())},
        status=400 if form.errors else 200,
    )
