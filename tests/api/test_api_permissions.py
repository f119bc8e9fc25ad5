"""Who may do what, for every operation of the API's OpenAPI document.

The operations come from the document, so a new endpoint cannot be forgotten: one with no entry in EXPECTED
fails the test saying what to add. Each is asked by nobody (no token), a viewer, someone in no group (reads
like a viewer), a deployer, an admin, and a read-only token of an admin. A write sends bad input (an empty
JSON object) to a thing that exists, or names a thing that does not exist: the role is refused (403) before
the input or the thing is looked at, and nothing changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.test import Client

from api.tokens import token_create
from deployments.environments import default_entry_script, default_environment_yaml
from deployments.models import AuditEvent, Cluster, Deployment, Operation, RegisteredModel
from deployments.services.deployments import deployment_create
from deployments.services.prices import vm_prices_seed
from tests.deployments.factories import ready_cluster

pytestmark = pytest.mark.django_db

OK, CREATED, BAD, UNAUTHORIZED, FORBIDDEN, MISSING = 200, 201, 400, 401, 403, 404


@dataclass(frozen=True)
class Expect:
    """What the viewer, the deployer and the admin get (someone in no group gets the viewer's)."""

    viewer: int
    deployer: int
    admin: int
    missing: bool = False  # the path names a thing that does not exist (a delete is probed without deleting)


def read() -> Expect:
    return Expect(OK, OK, OK)


def write(status: int = BAD, *, missing: bool = False) -> Expect:
    """A change deployers and admins may make; the probe is bad input (400) or a missing thing (404)."""
    return Expect(FORBIDDEN, status, status, missing)


def admin_only(status: int) -> Expect:
    return Expect(FORBIDDEN, FORBIDDEN, status)


# Add an entry for every new operation: what viewer, deployer and admin get for the probe.
EXPECTED: dict[str, Expect] = {
    "GET /api/v1/me": read(),
    "GET /api/v1/targets": read(),
    # A person's own tokens: every role manages its own.
    "GET /api/v1/tokens": read(),
    "POST /api/v1/tokens": Expect(BAD, BAD, BAD),
    "DELETE /api/v1/tokens/{name}": Expect(MISSING, MISSING, MISSING, missing=True),
    "GET /api/v1/operations": read(),
    "GET /api/v1/operations/{operation_id}": read(),
    "GET /api/v1/audit": read(),
    "GET /api/v1/audit.csv": read(),
    "GET /api/v1/clusters": read(),
    "GET /api/v1/clusters/{ref}": read(),
    "POST /api/v1/clusters": write(),
    "DELETE /api/v1/clusters/{ref}": write(MISSING, missing=True),
    "GET /api/v1/models": read(),
    "GET /api/v1/models/{name}": read(),
    "GET /api/v1/models/{name}/versions/{version}": read(),
    "POST /api/v1/models": write(),
    "GET /api/v1/costs": read(),
    # People: admins only, as their changes on the page.
    "GET /api/v1/people": admin_only(OK),
    "POST /api/v1/people": admin_only(BAD),
    "PATCH /api/v1/people/{username}": admin_only(OK),  # an empty change changes nothing
    # Deployments (perm-demo is being deployed: Transitioning).
    "GET /api/v1/deployments": read(),
    "GET /api/v1/deployments/{ref}": read(),
    "GET /api/v1/deployments/{ref}/revisions": read(),
    "GET /api/v1/deployments/{ref}/keys": read(),
    "GET /api/v1/deployments/{ref}/logs": read(),
    "POST /api/v1/deployments": write(),
    "PATCH /api/v1/deployments/{ref}": write(409),  # the service refuses a change while it is Transitioning
    "POST /api/v1/deployments/{ref}/rollback": write(),
    "POST /api/v1/deployments/{ref}/traffic": write(),
    "POST /api/v1/deployments/{ref}/move": write(),
    "DELETE /api/v1/deployments/{ref}": write(MISSING, missing=True),
    "POST /api/v1/deployments/{ref}/keys/reveal": write(),
    "POST /api/v1/deployments/{ref}/keys/regenerate": write(),
    "POST /api/v1/deployments/{ref}/score": write(),
}


@pytest.fixture
def objects(deployer, viewer) -> dict[str, str]:
    """One real object of each kind; what fills each path parameter."""
    vm_prices_seed()
    cluster = ready_cluster(deployer, "perm-1")
    model = RegisteredModel.objects.create(
        name="digits", version=1, path="digits/1/digits", labels="zero\none"
    )
    operation = deployment_create(
        user=deployer,
        name="perm-demo",
        cluster=cluster,
        model=model,
        entry_script=default_entry_script(),
        environment_yaml=default_environment_yaml(),
    )
    return {"operation_id": str(operation.pk), "username": viewer.username, "version": "1"}


def url_for(path: str, objects: dict[str, str], missing: bool) -> str:
    values = dict(objects)
    if path.startswith("/api/v1/clusters/"):
        values["ref"] = "perm-1"
    elif path.startswith("/api/v1/deployments/"):
        values["ref"] = "perm-demo"
    values["name"] = "digits"
    if missing:
        values = {key: "no-such-thing" if key != "operation_id" else "999999" for key in values}
    for key, value in values.items():
        path = path.replace("{" + key + "}", value)
    assert "{" not in path, f"{path}: say what fills its parameters in url_for"
    return path


def operations(client: Client) -> list[tuple[str, str]]:
    document = client.get("/api/v1/openapi.json").json()
    return [(method.upper(), path) for path, methods in document["paths"].items() for method in methods]


def ask(client: Client, method: str, url: str, secret: str | None) -> int:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {secret}"} if secret else {}
    if method == "GET":
        return client.get(url, **headers).status_code
    send = getattr(client, method.lower())
    return send(url, {}, content_type="application/json", **headers).status_code


def test_every_operation_has_an_expectation(client):
    found = {f"{method} {path}" for method, path in operations(client)}
    missing = sorted(found - set(EXPECTED))
    assert not missing, "Add these to EXPECTED in tests/api/test_api_permissions.py:\n" + "\n".join(missing)
    stale = sorted(set(EXPECTED) - found)
    assert not stale, f"EXPECTED names operations the API no longer has: {stale}"


def test_every_operation_answers_each_role_as_expected(objects, viewer, outsider, deployer, admin_user):
    people = {"viewer": viewer, "outsider": outsider, "deployer": deployer, "admin": admin_user}
    secrets = {who: token_create(actor=user, owner=user, name="probe").secret for who, user in people.items()}
    read_only = token_create(actor=admin_user, owner=admin_user, name="ro", read_only=True).secret
    before = (Cluster.objects.count(), Deployment.objects.count(), Operation.objects.count())
    audit_before = AuditEvent.objects.count()
    client = Client()
    wrong = []
    for method, path in operations(client):
        expect = EXPECTED.get(f"{method} {path}")
        if expect is None:
            continue  # test_every_operation_has_an_expectation names it
        url = url_for(path, objects, expect.missing)
        wanted = {
            "nobody": UNAUTHORIZED,
            "viewer": expect.viewer,
            "outsider": expect.viewer,
            "deployer": expect.deployer,
            "admin": expect.admin,
            "read-only": OK if method == "GET" else FORBIDDEN,
        }
        for who, status in wanted.items():
            secret = {"nobody": None, "read-only": read_only}.get(who, secrets.get(who))
            got = ask(client, method, url, secret)
            if got != status:
                wrong.append(f"{method} {url} as {who}: {got}, expected {status}")
    assert not wrong, "\n".join(wrong)
    # Probes change nothing (the tokens made above are the only audit events).
    assert (Cluster.objects.count(), Deployment.objects.count(), Operation.objects.count()) == before
    assert AuditEvent.objects.count() == audit_before
