"""A deployment's scoring keys: reveal one (shown once, audited) or regenerate one (audited).

Both are POSTs; a GET of their URLs (the revealed key's page reloaded, or opened again from the history)
changes nothing and goes back to the deployment's keys, rather than to an empty 405.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from accounts.roles import AuthedRequest, can_deploy, deployer_required
from deployments.forms import KeyForm
from deployments.models import Deployment
from deployments.services import Refused
from deployments.services.deployments import deployment_key_regenerate, deployment_key_reveal


def _keys_url(pk: int) -> str:
    return reverse("deployment_detail", args=[pk]) + "#keys"


@require_http_methods(["GET", "POST"])
def key_reveal(request: AuthedRequest, pk: int) -> HttpResponse:
    if request.method == "GET":
        if can_deploy(request.user):
            messages.info(request, "A revealed key is shown once: reveal it again to see it (recorded).")
        return redirect(_keys_url(pk))
    return _key_reveal(request, pk)


@deployer_required
def _key_reveal(request: AuthedRequest, pk: int) -> HttpResponse:
    deployment = get_object_or_404(Deployment.objects.select_related("cluster"), pk=pk)
    form = KeyForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose the Primary or the Secondary key.")
        return redirect(_keys_url(pk))
    try:
        secret = deployment_key_reveal(user=request.user, deployment=deployment, key=form.cleaned_data["key"])
    except Refused as exc:
        messages.error(request, str(exc))
        return redirect(_keys_url(pk))
    response = render(
        request,
        "deployments/deployment_key.html",
        {"deployment": deployment, "key_name": form.cleaned_data["key"], "secret": secret},
    )
    response["Cache-Control"] = "no-store"  # shown once: not kept by the browser's cache or back button
    return response


@require_http_methods(["GET", "POST"])
def key_regenerate(request: AuthedRequest, pk: int) -> HttpResponse:
    if request.method == "GET":
        return redirect(_keys_url(pk))
    return _key_regenerate(request, pk)


@deployer_required
def _key_regenerate(request: AuthedRequest, pk: int) -> HttpResponse:
    deployment = get_object_or_404(Deployment.objects.select_related("cluster", "model"), pk=pk)
    form = KeyForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose the Primary or the Secondary key; nothing was changed.")
        return redirect(_keys_url(pk))
    try:
        operation = deployment_key_regenerate(
            user=request.user,
            deployment=deployment,
            key=form.cleaned_data["key"],
            idempotency_key=form.cleaned_data["idempotency_key"] or None,
        )
    except Refused as exc:
        messages.error(request, str(exc))
        return redirect(_keys_url(pk))
    return redirect("operation_detail", pk=operation.pk)
