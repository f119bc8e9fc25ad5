"""People: who has which role and team. Admins only; every change is audited by the people page's services."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import transaction
from django.http import HttpRequest
from ninja import Query, Router, Schema

from accounts.roles import groups_forget, groups_remember, role_of, teams_of_user
from api.auth import AUTH_ADMIN, require_admin
from api.errors import InvalidInput, NotFound
from api.pagination import PageQuery, page
from api.schemas import REFUSALS
from dashboard.forms import NewPersonForm, PersonForm
from dashboard.people import user_create, user_role_set, user_team_set
from deployments.services import Refused

router = Router(auth=AUTH_ADMIN)  # writes are refused before the body is read; reads are checked below


class PersonOut(Schema):
    username: str
    email: str
    role: str  # viewer | deployer | admin
    teams: list[str]
    is_active: bool
    is_superuser: bool  # always an admin; its role is changed in Django's admin only
    last_login: datetime | None
    date_joined: datetime


class PersonPage(Schema):
    items: list[PersonOut]
    next_cursor: str | None


class PersonIn(Schema):
    username: str
    email: str = ""
    password: str  # checked by the password rules; never answered
    role: str  # viewer | deployer | admin
    team: str = ""


class PersonPatch(Schema):
    """Either or both; what is left out stays as it is."""

    role: str | None = None
    team: str | None = None  # "" takes them out of every team


def _person(person: User) -> dict[str, Any]:
    return {
        "username": person.get_username(),
        "email": person.email,
        "role": role_of(person),
        "teams": teams_of_user(person),
        "is_active": person.is_active,
        "is_superuser": person.is_superuser,
        "last_login": person.last_login,
        "date_joined": person.date_joined,
    }


def _listed(person: User) -> dict[str, Any]:
    # The prefetched groups fill the cache roles.py reads: two queries for a whole page.
    groups_remember(person, {group.name for group in person.groups.all()})
    return _person(person)


def _person_by_username(username: str) -> User:
    person = get_user_model().objects.filter(username=username).first()
    if person is None:
        raise NotFound(f"No person called {username}.")
    return person


@router.get("", response={200: PersonPage, **REFUSALS}, summary="People, their roles and teams (admins)")
def person_list(request: HttpRequest, query: Query[PageQuery]) -> dict:
    require_admin(request)
    return page(get_user_model().objects.prefetch_related("groups"), query, _listed)


@router.post(
    "", response={201: PersonOut, **REFUSALS}, summary="Add a person with a role and a team (admins)"
)
def person_new(request: HttpRequest, payload: PersonIn) -> tuple[int, dict]:
    actor = require_admin(request)
    form = NewPersonForm(payload.model_dump())
    if not form.is_valid():
        raise InvalidInput.from_form(form)
    data = form.cleaned_data
    # The service refuses (409) a username taken, in any case, meanwhile or before.
    person = user_create(
        actor=actor,
        username=data["username"],
        email=data["email"],
        password=data["password"],
        role=data["role"],
        team=data["team"],
    )
    return 201, _person(get_user_model().objects.get(pk=person.pk))


@router.patch(
    "/{username}", response={200: PersonOut, **REFUSALS}, summary="Change a person's role or team (admins)"
)
def person_update(request: HttpRequest, username: str, payload: PersonPatch) -> dict:
    actor = require_admin(request)
    person = _person_by_username(username)
    role, teams = role_of(person), teams_of_user(person)
    # The page's form always posts both; what the request leaves out is filled in as it is now.
    form = PersonForm(
        {
            "role": role if payload.role is None else payload.role,
            "team": (teams[0] if teams else "") if payload.team is None else payload.team,
        }
    )
    if not form.is_valid():
        raise InvalidInput.from_form(form)
    # Both changes or neither: a team the service refuses leaves the role as it was too.
    with transaction.atomic():
        if payload.role is not None and form.cleaned_data["role"] != role:
            user_role_set(actor=actor, user=person, role=form.cleaned_data["role"])  # refusals: 409
        if payload.team is not None and [form.cleaned_data["team"].strip()] != (teams or [""]):
            try:
                user_team_set(actor=actor, user=person, team=form.cleaned_data["team"])
            except Refused as exc:  # a role's name given as a team: bad input
                raise InvalidInput({"team": [str(exc)]}) from None
    groups_forget(person)
    return _person(person)
