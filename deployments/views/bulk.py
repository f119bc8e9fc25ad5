"""Several deployments at once: the overview's selection, deleted after one confirmation listing them."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.db.models import QuerySet
from django.http import HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from accounts.roles import AuthedRequest, deployer_required
from deployments.forms import ConfirmForm
from deployments.models import Deployment
from deployments.services.deployments import DELETABLE_STATES, deployment_delete_many
from deployments.states import ServiceState

from .confirm import Confirmation, confirm_render

# A selection is what one overview page shows at most; more in one request would be a script's job (the API).
MAX_SELECTED = 500


class DeploymentsDeleteForm(ConfirmForm):
    # Any deployment: one deleted since the page was shown is refused by the service, by name, and the form
    # sent twice finds the operations it started the first time.
    deployments = forms.ModelMultipleChoiceField(queryset=Deployment.objects.all())


def _selected(request: AuthedRequest) -> QuerySet[Deployment]:
    ids = [int(value) for value in request.GET.getlist("deployments")[:MAX_SELECTED] if value.isdigit()]
    return (
        Deployment.objects.filter(pk__in=ids)
        .exclude(state=ServiceState.DELETED)
        .select_related("cluster", "model", "owner")
        .order_by("name")
    )


@require_GET
@deployer_required
def deployments_delete_confirm(request: AuthedRequest) -> HttpResponse:
    """?deployments=<pk>&deployments=<pk>…: the overview's checkboxes."""
    rows = list(_selected(request))
    deletable = [d for d in rows if d.state in DELETABLE_STATES]
    if not deletable:
        messages.error(
            request,
            "Select the deployments to delete first (tick them in the list)."
            if not rows
            else "The deployments selected are already being deleted.",
        )
        return redirect(reverse("overview") + "#deployments")
    others = sorted({d.owner.get_username() for d in deletable if d.owner and d.owner != request.user})
    consequences = [
        f"{'This deployment is' if len(deletable) == 1 else f'These {len(deletable)} deployments are'} "
        "deleted, each as its own operation in the history: clients calling them get errors from then on.",
        "Their keys stop working; their records, revisions and history stay in Lynx. Their clusters stay.",
    ]
    if others:
        consequences.append(f"Some of them belong to someone else: {', '.join(others)}.")
    if len(deletable) < len(rows):
        consequences.append("Those already being deleted are only listed.")
    return confirm_render(
        request,
        Confirmation(
            title=f"Delete {len(deletable)} deployment{'s' if len(deletable) != 1 else ''}?",
            consequences=consequences,
            action=reverse("deployments_delete"),
            button=f"Delete {len(deletable)} deployment{'s' if len(deletable) != 1 else ''}",
            cancel=reverse("overview") + "#deployments",
            fields=[("deployments", str(d.pk)) for d in deletable],
            rows=rows,
        ),
    )


@require_POST
@deployer_required
def deployments_delete_view(request: AuthedRequest) -> HttpResponse:
    form = DeploymentsDeleteForm(request.POST)
    if not form.is_valid():
        messages.error(
            request,
            "Some of the deployments selected no longer exist; nothing was changed. Select them again."
            if form.has_error("deployments", "invalid_choice")
            else "The delete form was incomplete; nothing was changed.",
        )
        return redirect(reverse("overview") + "#deployments")
    result = deployment_delete_many(
        user=request.user,
        deployments=form.cleaned_data["deployments"].order_by("name"),
        idempotency_key=form.cleaned_data["idempotency_key"],
    )
    for name, reason in result.refused.items():
        messages.error(request, f"{name} was not deleted: {reason}")
    if len(result.operations) == 1 and not result.refused:
        return redirect("operation_detail", pk=result.operations[0].pk)
    if result.operations:
        names = ", ".join(operation.resource_name for operation in result.operations)
        messages.success(request, f"Deleting {len(result.operations)} deployments: {names}.")
    return redirect(reverse("overview") + "#deployments")
