"""/api/v1/people: admins list people, add them and change their role and team, through the people page's
forms and services, audited the same way."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User

from accounts.roles import role_of, teams_of_user
from deployments.models import AuditEvent
from tests.api.conftest import bearer

pytestmark = pytest.mark.django_db

NEW_PERSON = {
    "username": "nina",
    "email": "nina@example.com",
    "password": "correct-horse-battery",
    "role": "deployer",
    "team": "vision",
}


def _fresh(username: str) -> User:
    """The person as stored now (roles.py caches group names on the instance)."""
    return User.objects.get(username=username)


def _people_events() -> int:
    return AuditEvent.objects.filter(action__startswith="user.").count()


# --- reading ------------------------------------------------------------------------------------------


def test_an_admin_lists_people_with_roles_and_teams(
    client, admin_user, deployer, viewer, outsider, token_for
):
    deployer.groups.add(Group.objects.create(name="vision"))
    response = client.get("/api/v1/people", **bearer(token_for(admin_user)))
    assert response.status_code == 200
    people = {p["username"]: p for p in response.json()["items"]}
    assert list(people) == [
        u.username for u in User.objects.order_by("pk")
    ]  # oldest first: as they were added
    assert set(people) == {"ada", "dana", "vera", "otto"}
    assert people["dana"] == {
        "username": "dana",
        "email": "dana@example.com",
        "role": "deployer",
        "teams": ["vision"],
        "is_active": True,
        "is_superuser": False,
        "last_login": None,
        "date_joined": people["dana"]["date_joined"],
    }
    assert people["otto"]["role"] == "viewer" and people["ada"]["role"] == "admin"
    assert people["ada"]["is_superuser"] is True
    assert "password" not in response.content.decode()


def test_the_list_is_paged(client, admin_user, deployer, viewer, token_for):
    headers = bearer(token_for(admin_user))
    first = client.get("/api/v1/people?limit=2", **headers).json()
    assert [p["username"] for p in first["items"]] == ["ada", "dana"]
    rest = client.get(f"/api/v1/people?limit=2&cursor={first['next_cursor']}", **headers).json()
    assert [p["username"] for p in rest["items"]] == ["vera"] and rest["next_cursor"] is None


# --- adding -------------------------------------------------------------------------------------------


def test_an_admin_adds_a_person_with_a_role_and_a_team(client, admin_user, token_for):
    response = client.post(
        "/api/v1/people", NEW_PERSON, content_type="application/json", **bearer(token_for(admin_user, "ops"))
    )
    assert response.status_code == 201
    body = response.json()
    assert (body["username"], body["role"], body["teams"], body["email"]) == (
        "nina",
        "deployer",
        ["vision"],
        "nina@example.com",
    )
    assert NEW_PERSON["password"] not in response.content.decode()
    nina = _fresh("nina")
    assert nina.check_password(NEW_PERSON["password"]) and role_of(nina) == "deployer"
    event = AuditEvent.objects.get(action="user.create")
    assert (event.actor_name, event.resource_name, event.via) == ("ada", "nina", "token ops")
    assert event.after == {
        "username": "nina",
        "email": "nina@example.com",
        "role": "deployer",
        "teams": ["vision"],
    }
    assert "correct-horse" not in str(event.after)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"password": "12345678"}, "password"),  # all digits, and common
        ({"password": "nina@example.com"}, "password"),  # like the email
        ({"role": "owner"}, "role"),
        ({"username": "nina smith"}, "username"),
        ({"email": "not-an-email"}, "email"),
        ({"team": "x"}, "team"),
    ],
)
def test_bad_input_adds_nobody(client, admin_user, token_for, changes, field):
    headers = bearer(token_for(admin_user))
    before = _people_events()
    response = client.post(
        "/api/v1/people", {**NEW_PERSON, **changes}, content_type="application/json", **headers
    )
    assert response.status_code == 400 and field in response.json()["errors"]
    assert not User.objects.filter(username__in=("nina", "nina smith")).exists()
    assert _people_events() == before


def test_a_username_taken_in_any_case_is_refused(client, admin_user, deployer, token_for):
    headers = bearer(token_for(admin_user))
    response = client.post(
        "/api/v1/people", {**NEW_PERSON, "username": "DANA"}, content_type="application/json", **headers
    )
    assert response.status_code == 409 and response.json()["detail"] == "There is already a user called DANA."
    assert User.objects.count() == 2


# --- changing -----------------------------------------------------------------------------------------


def test_an_admin_changes_a_role_and_it_is_audited(client, admin_user, viewer, token_for):
    response = client.patch(
        "/api/v1/people/vera",
        {"role": "deployer"},
        content_type="application/json",
        **bearer(token_for(admin_user, "ops")),
    )
    assert response.status_code == 200 and response.json()["role"] == "deployer"
    assert role_of(_fresh("vera")) == "deployer"
    event = AuditEvent.objects.get(action="user.role")
    assert (event.actor_name, event.resource_name, event.via) == ("ada", "vera", "token ops")
    assert (event.before, event.after) == ({"role": "viewer"}, {"role": "deployer"})
    assert not AuditEvent.objects.filter(action="user.team").exists()  # the team was not asked about


def test_a_team_alone_changes_only_the_team(client, admin_user, deployer, token_for):
    deployer.groups.add(Group.objects.create(name="vision"), Group.objects.create(name="speech"))
    headers = bearer(token_for(admin_user))
    response = client.patch(
        "/api/v1/people/dana", {"team": "research"}, content_type="application/json", **headers
    )
    assert response.status_code == 200
    assert response.json()["teams"] == ["research"] and response.json()["role"] == "deployer"
    event = AuditEvent.objects.get(action="user.team")
    assert (event.before, event.after) == ({"teams": ["speech", "vision"]}, {"teams": ["research"]})
    assert not AuditEvent.objects.filter(action="user.role").exists()
    cleared = client.patch("/api/v1/people/dana", {"team": ""}, content_type="application/json", **headers)
    assert cleared.json()["teams"] == [] and teams_of_user(_fresh("dana")) == []


def test_nothing_asked_changes_nothing(client, admin_user, deployer, token_for):
    headers = bearer(token_for(admin_user))
    before = _people_events()
    same = client.patch(
        "/api/v1/people/dana", {"role": "deployer"}, content_type="application/json", **headers
    )
    assert same.status_code == 200 and same.json()["role"] == "deployer"
    assert _people_events() == before


def test_a_refused_team_leaves_the_role_as_it_was(client, admin_user, deployer, token_for):
    headers = bearer(token_for(admin_user))
    before = _people_events()
    response = client.patch(
        "/api/v1/people/dana", {"role": "admin", "team": "Admin"}, content_type="application/json", **headers
    )
    assert response.status_code == 400
    assert response.json()["errors"] == {"team": ["Admin is a role, not a team; choose another team name."]}
    assert role_of(_fresh("dana")) == "deployer" and _people_events() == before


@pytest.mark.parametrize(
    ("username", "detail"),
    [
        ("ada", "Ask another admin to change your own role, so Lynx never loses its last admin."),
        ("root", "root is a superuser, so always an admin (see Django's admin)."),
    ],
)
def test_the_services_refusals_are_409s(client, admin_user, django_user_model, token_for, username, detail):
    django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-long")
    headers = bearer(token_for(admin_user))
    before = _people_events()
    response = client.patch(
        f"/api/v1/people/{username}", {"role": "viewer"}, content_type="application/json", **headers
    )
    assert response.status_code == 409 and response.json()["detail"] == detail
    assert _people_events() == before


def test_a_bad_role_is_a_400(client, admin_user, viewer, token_for):
    response = client.patch(
        "/api/v1/people/vera",
        {"role": "owner"},
        content_type="application/json",
        **bearer(token_for(admin_user)),
    )
    assert response.status_code == 400 and "role" in response.json()["errors"]
    assert role_of(_fresh("vera")) == "viewer"


def test_an_unknown_person_is_a_404(client, admin_user, token_for):
    response = client.patch(
        "/api/v1/people/nobody",
        {"role": "viewer"},
        content_type="application/json",
        **bearer(token_for(admin_user)),
    )
    assert response.status_code == 404 and response.json() == {"detail": "No person called nobody."}


# --- who may -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("persona", "read_only", "expected"),
    [
        ("viewer", False, (403, 403, 403)),
        ("outsider", False, (403, 403, 403)),
        ("deployer", False, (403, 403, 403)),
        ("admin_user", False, (200, 201, 200)),
        ("admin_user", True, (200, 403, 403)),
    ],
)
def test_only_admins_see_and_change_people(client, request, token_for, viewer, persona, read_only, expected):
    user = request.getfixturevalue(persona)
    headers = bearer(token_for(user, "probe", read_only=read_only))
    before = (User.objects.count(), role_of(_fresh("vera")), _people_events())
    got = (
        client.get("/api/v1/people", **headers).status_code,
        client.post("/api/v1/people", NEW_PERSON, content_type="application/json", **headers).status_code,
        client.patch(
            "/api/v1/people/vera", {"role": "deployer"}, content_type="application/json", **headers
        ).status_code,
    )
    assert got == expected
    if expected[1] == 403:
        assert (User.objects.count(), role_of(_fresh("vera")), _people_events()) == before


def test_a_bad_body_from_a_non_admin_is_still_a_403(client, deployer, token_for):
    response = client.post(
        "/api/v1/people", {"nonsense": 1}, content_type="application/json", **bearer(token_for(deployer))
    )
    assert response.status_code == 403 and response.json() == {"detail": "Only admins may do this."}
