"""A person's own tokens page: make one (shown once), see them, revoke one."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from accounts.roles import AuthedRequest
from api.forms import TokenForm
from api.models import ApiToken
from api.tokens import token_create, token_revoke
from deployments.services import Refused


def token_list(request: AuthedRequest) -> HttpResponse:
    form = TokenForm(request.POST or None)
    secret = None
    if request.method == "POST" and form.is_valid():
        try:
            new = token_create(
                actor=request.user,
                owner=request.user,
                name=form.cleaned_data["name"],
                expires_days=form.cleaned_data["expires_days"],
                read_only=form.cleaned_data["read_only"],
            )
        except Refused as exc:
            form.add_error("name", str(exc))
        else:
            # Shown in this answer only (not redirected to a page that could be reloaded or cached).
            secret = new.secret
            form = TokenForm()
    tokens = ApiToken.objects.filter(user=request.user).order_by("revoked_at", "-created_at")[:100]
    response = render(
        request,
        "api/tokens.html",
        {"form": form, "tokens": tokens, "secret": secret},
        status=400 if form.errors else 200,
    )
    response["Cache-Control"] = "no-store"  # it may hold a secret
    return response


@require_POST
def token_revoke_view(request: AuthedRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    try:
        token_revoke(actor=request.user, owner=request.user, name=token.name)
        messages.success(request, f'The token "{token.name}" is revoked: it no longer signs anything in.')
    except Refused as exc:
        messages.error(request, str(exc))
    return redirect("token_list")
