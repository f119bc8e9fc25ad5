"""People: who has which role and team. Everybody reads it; admins change it (audited)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from accounts.roles import ROLES, AuthedRequest, admin_required, groups_remember, role_of, teams_of_user
from dashboard.forms import NewPersonForm, PersonForm
from dashboard.people import user_create, user_role_set, user_team_set
from deployments.services.operations import Refused


def _render(request: HttpRequest, new_form: NewPersonForm, status: int = 200) -> HttpResponse:
    people = []
    for person in get_user_model().objects.prefetch_related("groups").order_by("username"):
        # The prefetched groups fill the per-user cache roles.py reads, so this is two queries in all.
        groups_remember(person, {group.name for group in person.groups.all()})
        people.append((person, role_of(person), teams_of_user(person)))
    return render(
        request,
        "dashboard/people.html",
        {"people": people, "new_form": new_form, "roles": ROLES},
        status=status,
    )


@require_GET
def people(request: AuthedRequest) -> HttpResponse:
    return _render(request, NewPersonForm())


@require_POST
@admin_required
def person_update(request: AuthedRequest, pk: int) -> HttpResponse:
    person = get_object_or_404(get_user_model(), pk=pk)
    form = PersonForm(request.POST)
    if not form.is_valid():
        errors = " ".join(" ".join(map(str, msgs)) for msgs in form.errors.values())
        messages.error(request, f"{person.get_username()}: {errors} Nothing was changed.")
        return redirect("people")
    try:
        if form.cleaned_data["role"] != role_of(person):
            user_role_set(actor=request.user, user=person, role=form.cleaned_data["role"])
        if [form.cleaned_data["team"].strip()] != (teams_of_user(person) or [""]):
            user_team_set(actor=request.user, user=person, team=form.cleaned_data["team"])
    except Refused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Saved {person.get_username()}.")
    return redirect("people")


@require_POST
@admin_required
def person_create(request: AuthedRequest) -> HttpResponse:
    form = NewPersonForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            person = user_create(
                actor=request.user,
                username=data["username"],
                email=data["email"],
                password=data["password"],
                role=data["role"],
                team=data["team"],
            )
        except Refused as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Added {person.get_username()} as {data['role']}.")
            return redirect("people")
    return _render(request, form, status=400)
