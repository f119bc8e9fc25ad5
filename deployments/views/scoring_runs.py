"""The test-scoring page: send an image to a Healthy deployment and read its top classes."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET, require_http_methods

from accounts.roles import AuthedRequest, can_deploy
from deployments.forms import TestScoringForm
from deployments.models import Deployment, ScoringRun
from deployments.services import Refused
from deployments.services.scoring_runs import MAX_IMAGE_BYTES, ImageRefused, pretty_json, scoring_run_create
from deployments.states import ServiceState

from .uploads import streamed_uploads, too_large

RUNS_SHOWN = 10  # earlier runs listed under the form


def _deployer_for_post(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Everyone reads the page; only deployers send images (checked before the body is read)."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.method == "POST" and not can_deploy(request.user):
            raise PermissionDenied("Your role is viewer: ask an admin for the deployer role to test-score.")
        return view(request, *args, **kwargs)

    return wrapped


def score_bars(run: ScoringRun | None) -> list[dict]:
    """The top classes as rows of a bar chart: probabilities as percentages, other scores as they are."""
    if run is None or not run.top_classes:
        return []
    values = [entry["probability"] for entry in run.top_classes]
    as_percent = all(0.0 <= value <= 1.0 for value in values)
    top = max(abs(value) for value in values) or 1.0
    bars = []
    for entry in run.top_classes:
        value = entry["probability"]
        text = f"{value * 100:.1f}%" if as_percent else f"{value:.4g}"
        width = value * 100 if as_percent else abs(value) / top * 100
        bars.append({"label": entry["label"], "text": text, "width": round(max(0.0, min(width, 100.0)), 1)})
    return bars


@_deployer_for_post
@streamed_uploads(MAX_IMAGE_BYTES)
@require_http_methods(["GET", "POST"])
def deployment_test(request: AuthedRequest, pk: int) -> HttpResponse:
    deployment = get_object_or_404(Deployment.objects.select_related("cluster", "model"), pk=pk)
    form = TestScoringForm(request.POST, request.FILES) if request.method == "POST" else TestScoringForm()
    run = None
    if request.method == "POST":
        if too_large(request, "image"):
            form.add_error("image", f"The image is over {MAX_IMAGE_BYTES // 2**20} MB; nothing was sent.")
        elif form.is_valid():
            upload = form.cleaned_data["image"]
            try:
                run = scoring_run_create(
                    user=request.user, deployment=deployment, image=upload.read(), image_name=upload.name
                )
            except ImageRefused as exc:
                form.add_error("image", str(exc))
            except Refused as exc:
                form.add_error(None, str(exc))
    # Lazy: only the whole page lists the earlier runs.
    recent = deployment.scoring_runs.defer("thumbnail", "response_excerpt")[:RUNS_SHOWN]
    # The page's script posts with fetch and swaps in only what a POST changes: no page to rebuild.
    partial = request.method == "POST" and request.headers.get("X-Lynx-Partial") == "test-outcome"
    return render(
        request,
        "deployments/_test_outcome.html" if partial else "deployments/deployment_test.html",
        {
            "partial": partial,
            "deployment": deployment,
            "form": form,
            "run": run,
            "bars": score_bars(run),
            "raw_response": pretty_json(run.response_excerpt) if run else "",
            "runs": recent,
            "runs_shown": RUNS_SHOWN,
            "healthy": deployment.state == ServiceState.HEALTHY,
        },
        status=400 if form.errors else 200,
    )


@require_GET
def scoring_run_thumbnail(request: AuthedRequest, pk: int) -> HttpResponse:
    """The PNG thumbnail of one of a deployment's test runs (?run=<id>; the latest run without it)."""
    runs = ScoringRun.objects.filter(deployment_id=pk).only("thumbnail")
    run_id = request.GET.get("run", "")
    run = (
        get_object_or_404(runs, pk=int(run_id))
        if run_id.isdigit()
        else runs.order_by("-created_at", "-pk").first()
    )
    if run is None:
        return HttpResponse(status=404)
    if not run.thumbnail:
        return HttpResponse(status=404)
    response = HttpResponse(bytes(run.thumbnail), content_type="image/png")
    response["Cache-Control"] = "private, max-age=86400"
    return response
