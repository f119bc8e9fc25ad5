"""Operation pages and their live progress."""

from __future__ import annotations

from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from accounts.roles import AuthedRequest
from deployments.models import Operation


@require_GET
def operation_list(request: AuthedRequest) -> HttpResponse:
    operations = Operation.objects.order_by("-created_at")[:200]
    return render(request, "deployments/operation_list.html", {"operations": operations})


@require_GET
def operation_detail(request: AuthedRequest, pk: int) -> HttpResponse:
    operation = get_object_or_404(Operation.objects.select_related("cluster", "deployment"), pk=pk)
    lines = list(operation.lines.all()[:2000])
    return render(
        request,
        "deployments/operation_detail.html",
        {"operation": operation, "lines": lines, "last_line_id": lines[-1].id if lines else 0},
    )


@require_GET
def operation_progress(request: AuthedRequest, pk: int) -> JsonResponse:
    """Live progress: state, percentage and the log lines after `after` (an id)."""
    operation = get_object_or_404(Operation, pk=pk)
    after_text = request.GET.get("after", "")
    after = int(after_text) if after_text.isdigit() else 0
    lines = list(operation.lines.filter(id__gt=after).values("id", "created_at", "text")[:500])
    target = ""
    if operation.deployment_id:
        target = f"/deployments/{operation.deployment_id}/"
    elif operation.cluster_id:
        target = f"/clusters/{operation.cluster_id}/"
    elif operation.workspace_id:
        target = f"/workspaces/{operation.workspace_id}/"
    return JsonResponse(
        {
            "state": operation.state,
            "progress": operation.progress,
            "finished": operation.is_finished,
            "error": operation.error,
            "resource_url": target,
            "lines": [
                {"id": line["id"], "at": line["created_at"].strftime("%H:%M:%S"), "text": line["text"]}
                for line in lines
            ],
        }
    )
