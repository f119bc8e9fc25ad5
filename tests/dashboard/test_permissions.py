"""Who may do what, for every URL the project defines.

The routes come from the URL resolver, so a new page cannot be forgotten: a route with no entry in
EXPECTED fails the test with a message saying what to add. Each route is asked with GET and with POST
(a form with every field missing: bad input, which changes nothing) by an anonymous visitor, a viewer,
someone in no group (reads like a viewer), a deployer and an admin.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from api.tokens import token_create
from deployments.crypto import encrypt
from deployments.environments import default_entry_script, default_environment_yaml
from deployments.models import Cluster, Deployment, RegisteredModel, ScoringRun, VmPrice, Workspace
from deployments.services.deployments import deployment_create
from deployments.services.prices import vm_prices_seed
from tests.deployments.factories import ready_cluster

pytestmark = pytest.mark.django_db

LOGIN = "login"  # anonymous: 302 to /login/?next=…
OK, REDIRECT, BAD, FORBIDDEN, NOT_ALLOWED = 200, 302, 400, 403, 405
# A POST carries this and nothing else: a bound form with every field missing, i.e. bad input. (An empty
# body would read as "no form sent" to views written `Form(request.POST or None)`.)
PROBE = {"probe": "1"}
# The health check answers 503 until a worker answers a ping (this test starts none).
HEALTH = frozenset({200, 503})


@dataclass(frozen=True)
class Expect:
    """What each role gets. get/post: (viewer, deployer, admin); someone in no group gets the viewer's.

    `obj` names the object whose pk fills `<int:pk>`; `args` maps other URL arguments to objects.
    """

    get: tuple
    post: tuple
    anonymous: tuple = (LOGIN, LOGIN)
    obj: str | None = None
    args: dict = field(default_factory=dict)


def page(obj: str | None = None, **args: str) -> Expect:
    """A page everybody reads; POST is not allowed."""
    return Expect(get=(OK, OK, OK), post=(NOT_ALLOWED,) * 3, obj=obj, args=args)


def action(obj: str | None = None, deployer: int = REDIRECT, admin: int | None = None, **args: str) -> Expect:
    """A POST-only change for deployers and admins: GET is not allowed, a viewer gets 403, and a form
    with nothing filled in is refused (a redirect with a message, or 400 with the form's errors)."""
    return Expect(
        get=(NOT_ALLOWED,) * 3,
        post=(FORBIDDEN, deployer, deployer if admin is None else admin),
        obj=obj,
        args=args,
    )


def admin_action(obj: str | None = None, admin: int = REDIRECT) -> Expect:
    """A POST-only change only admins may make."""
    return Expect(get=(NOT_ALLOWED,) * 3, post=(FORBIDDEN, FORBIDDEN, admin), obj=obj)


def form(obj: str | None = None) -> Expect:
    """A form page for deployers: a viewer is refused the page as well as the POST; a blank POST is a 400."""
    return Expect(get=(FORBIDDEN, OK, OK), post=(FORBIDDEN, BAD, BAD), obj=obj)


def admin_form(obj: str | None = None) -> Expect:
    """A form page only admins may open; a blank POST is a 400."""
    return Expect(get=(FORBIDDEN, FORBIDDEN, OK), post=(FORBIDDEN, FORBIDDEN, BAD), obj=obj)


# Add an entry here for every new route: what viewer, deployer and admin get for GET and POST.
EXPECTED: dict[str, Expect] = {
    # lynx/urls.py
    "overview": page(),
    "healthz": Expect(get=(HEALTH,) * 3, post=(NOT_ALLOWED,) * 3, anonymous=(HEALTH, NOT_ALLOWED)),
    "favicon": Expect(get=(301,) * 3, post=(NOT_ALLOWED,) * 3, anonymous=(301, NOT_ALLOWED)),
    "audit_list": page(),
    "audit_export": page(),
    "price_list": page(),
    "price_create": admin_action(admin=BAD),
    "price_update": admin_action("price"),
    "people": page(),
    "person_create": admin_action(admin=BAD),
    "person_update": admin_action("person"),
    "cluster_expiry_extend": action("cluster"),
    "cluster_expiry_cancel": action("cluster"),
    "login": Expect(get=(OK, OK, OK), post=(OK, OK, OK), anonymous=(OK, OK)),
    "logout": Expect(get=(NOT_ALLOWED,) * 3, post=(REDIRECT,) * 3),
    # api/urls.py: a person's own tokens (a blank form is a 400; someone else's token is not found)
    "token_list": Expect(get=(OK, OK, OK), post=(BAD, BAD, BAD)),
    "token_revoke": Expect(get=(NOT_ALLOWED,) * 3, post=(404, REDIRECT, 404), obj="token"),
    # deployments/urls.py
    "cluster_new": form(),
    "cluster_detail": page("cluster"),
    "cluster_delete": action("cluster"),
    # Confirmation pages (GET, for deployers) of destructive actions; without the choice they need (which
    # revision, key or traffic action; which deployments), a deployer is sent back with a message.
    "cluster_delete_confirm": Expect(get=(FORBIDDEN, OK, OK), post=(NOT_ALLOWED,) * 3, obj="cluster"),
    "cluster_teardown": action("cluster"),
    "deployments_delete": action(),
    "deployments_delete_confirm": Expect(get=(FORBIDDEN, REDIRECT, REDIRECT), post=(NOT_ALLOWED,) * 3),
    "deployment_new": form(),
    "deployment_detail": page("deployment"),
    "deployment_status": page("deployment"),
    "deployment_logs": page("deployment"),
    "deployment_update": form("deployment"),
    "deployment_rollback": action("deployment", number="revision"),
    "deployment_delete": action("deployment"),
    "deployment_delete_confirm": Expect(get=(FORBIDDEN, OK, OK), post=(NOT_ALLOWED,) * 3, obj="deployment"),
    "deployment_rollback_confirm": Expect(
        get=(FORBIDDEN, REDIRECT, REDIRECT), post=(NOT_ALLOWED,) * 3, obj="deployment"
    ),
    "deployment_traffic_confirm": Expect(
        get=(FORBIDDEN, REDIRECT, REDIRECT), post=(NOT_ALLOWED,) * 3, obj="deployment"
    ),
    "deployment_key_regenerate_confirm": Expect(
        get=(FORBIDDEN, REDIRECT, REDIRECT), post=(NOT_ALLOWED,) * 3, obj="deployment"
    ),
    "deployment_traffic": action("deployment"),
    "deployment_move": action("deployment"),
    # POSTs whose GET (a reload of the revealed key's page) goes back to the deployment's keys: no 405.
    "deployment_key_reveal": Expect(
        get=(REDIRECT,) * 3, post=(FORBIDDEN, REDIRECT, REDIRECT), obj="deployment"
    ),
    "deployment_key_regenerate": Expect(
        get=(REDIRECT,) * 3, post=(FORBIDDEN, REDIRECT, REDIRECT), obj="deployment"
    ),
    # The Consume section: the copy button's reveal (a blank form is a 400 in JSON), the API docs page, and
    # the swagger.json Lynx reads for it (this deployment has no swagger URI yet: 404 with the reason).
    "deployment_key_copy": action("deployment", deployer=BAD),
    "deployment_api_docs": page("deployment"),
    "deployment_swagger": Expect(get=(404, 404, 404), post=(NOT_ALLOWED,) * 3, obj="deployment"),
    "deployment_test": Expect(get=(OK, OK, OK), post=(FORBIDDEN, BAD, BAD), obj="deployment"),
    "scoring_run_thumbnail": page("deployment", run_pk="scoring_run"),
    "operation_list": page(),
    "operation_detail": page("operation"),
    "operation_progress": page("operation"),
    "model_list": page(),
    "model_new": form(),
    "model_detail": page("model"),
    # targets/azureml/urls.py
    "workspace_list": page(),
    "workspace_new": admin_form(),
    "workspace_detail": page("workspace"),
    "workspace_test": admin_action("workspace"),
    "workspace_secret": admin_form("workspace"),
    "workspace_sync": admin_action("workspace"),
    "azure_cluster_new": form(),
    "azure_managed_new": form(),
    "azure_kubernetes_new": form(),
    "azure_deployment": page("azure_deployment"),
    "azure_cluster": page("azure_cluster"),
    # A blank POST is an invalid TLS form: 400 for those who may change the cluster.
    "azure_cluster_tls": Expect(get=(NOT_ALLOWED,) * 3, post=(FORBIDDEN, BAD, BAD), obj="azure_cluster"),
    "azure_key_regenerate": action("azure_deployment"),
    "azure_logs": action("azure_deployment"),
}


def named_routes(resolver=None, prefix: str = "", namespace: str = ""):
    """(name, pattern, converters) for every named route but Django's admin, which has its own login."""
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            if entry.namespace in ("admin", "api"):
                # The admin has its own login; the API answers 401/403 in JSON, and
                # tests/api/test_api_permissions.py asks every operation of its OpenAPI document per role.
                continue
            ns = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            yield from named_routes(entry, prefix + str(entry.pattern), ns)
        elif isinstance(entry, URLPattern) and entry.name == "api_not_found":
            continue  # the API's JSON 404 for any path under api/ it lacks (tests/api/)
        elif isinstance(entry, URLPattern):
            assert entry.name, f"/{prefix}{entry.pattern} has no name: name it, so this test can check it"
            yield namespace + entry.name, "/" + prefix + str(entry.pattern), list(entry.pattern.converters)


@pytest.fixture
def objects(deployer, viewer):
    """One real object of each kind, so that every page has something to show."""
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
    deployment = operation.deployment
    run = ScoringRun.objects.create(
        deployment=deployment, user=deployer, user_name="dana", thumbnail=b"\x89PNG"
    )
    workspace = Workspace.objects.create(
        name="prod-ws",
        subscription_id="sub",
        resource_group="rg",
        workspace_name="ws",
        tenant_id="t",
        client_id="c",
        client_secret_encrypted=encrypt("s3cret"),
    )
    aks = Cluster.objects.create(
        name="aks-gpu",
        backend="azureml",
        workspace=workspace,
        vm_size="Standard_NC4as_T4_v3",
        provisioning_state="Succeeded",
        gpu_count=1,
        owner=deployer,
    )
    on_azure = Deployment.objects.create(
        name="azure-demo",
        cluster=aks,
        model=model,
        entry_script="",
        environment_yaml="",
        owner=deployer,
        state="Healthy",
    )
    token = token_create(actor=deployer, owner=deployer, name="perm").token
    return {
        "token": token.pk,
        "workspace": workspace.pk,
        "azure_deployment": on_azure.pk,
        "azure_cluster": aks.pk,
        "cluster": cluster.pk,
        "deployment": deployment.pk,
        "operation": operation.pk,
        "model": model.pk,
        "price": VmPrice.objects.get(vm_size="local").pk,
        "person": viewer.pk,
        "revision": deployment.revision,
        "scoring_run": run.pk,
    }


def url_for(name: str, converters: list[str], expect: Expect, objects: dict) -> str:
    kwargs = {}
    for arg in converters:
        source = expect.args.get(arg) or (expect.obj if arg == "pk" else None)
        assert source, f"{name}: say which object fills <{arg}> (Expect(obj=...) or args={{'{arg}': ...}})"
        kwargs[arg] = objects[source]
    return reverse(name, kwargs=kwargs)


def _matches(expected, status: int) -> bool:
    return status in expected if isinstance(expected, frozenset) else status == expected


def test_every_route_has_an_expectation():
    routes = {name: path for name, path, _ in named_routes()}
    missing = sorted(set(routes) - set(EXPECTED))
    assert not missing, (
        "These routes have no entry in EXPECTED in tests/dashboard/test_permissions.py; add one saying what "
        "anonymous, viewer, deployer and admin get for GET and POST:\n"
        + "\n".join(f"  {name!r}: {routes[name]}" for name in missing)
    )
    stale = sorted(set(EXPECTED) - set(routes))
    assert not stale, f"EXPECTED names routes that no longer exist: {stale}"


def test_every_route_answers_each_role_as_expected(objects, viewer, outsider, deployer, admin_user):
    users = {"viewer": viewer, "outsider": outsider, "deployer": deployer, "admin": admin_user}
    column = {"viewer": 0, "outsider": 0, "deployer": 1, "admin": 2}
    wrong = []
    for name, _, converters in named_routes():
        expect = EXPECTED.get(name)
        if expect is None:
            continue  # test_every_route_has_an_expectation names it
        url = url_for(name, converters, expect, objects)
        for who in ("anonymous", *users):
            for method, index in (("GET", 0), ("POST", 1)):
                client = Client()  # a fresh session each time: a POST to logout must not log the next one out
                if who != "anonymous":
                    client.force_login(users[who])
                try:
                    response = client.get(url) if method == "GET" else client.post(url, PROBE)
                except Exception as exc:  # noqa: BLE001 - report every broken page at once, not the first
                    wrong.append(f"{method} {url} ({name}) as {who}: raised {type(exc).__name__}: {exc}")
                    continue
                if who == "anonymous":
                    wanted = expect.anonymous[index]
                    if wanted == LOGIN:
                        ok = response.status_code == 302 and response["Location"].startswith("/login/")
                        wanted = "302 to /login/"
                    else:
                        ok = _matches(wanted, response.status_code)
                else:
                    wanted = (expect.get if method == "GET" else expect.post)[column[who]]
                    ok = _matches(wanted, response.status_code)
                if not ok:
                    wrong.append(
                        f"{method} {url} ({name}) as {who}: got {response.status_code}, expected {wanted}"
                    )
    assert not wrong, "\n".join(wrong)


def test_every_change_needs_a_csrf_token(objects, admin_user):
    """The test client skips CSRF checks unless asked: here it is asked, and every POST without a token
    is refused before the view runs."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    checked = 0
    for name, _, converters in named_routes():
        expect = EXPECTED.get(name)
        if expect is None or expect.post[2] == NOT_ALLOWED:
            continue
        response = client.post(url_for(name, converters, expect, objects), {})
        assert response.status_code == 403 and b"CSRF" in response.content, (name, response.status_code)
        checked += 1
    assert checked >= 15


def test_a_viewer_refused_a_change_is_told_why(objects, viewer):
    client = Client(enforce_csrf_checks=True)
    client.force_login(viewer)
    client.get("/")
    token = client.cookies["csrftoken"].value
    response = client.post(
        reverse("cluster_delete", args=[objects["cluster"]]), {"csrfmiddlewaretoken": token}
    )
    assert response.status_code == 403
    assert b"CSRF" not in response.content  # refused for the role, not for a missing token


def test_django_admin_is_for_superusers_only(viewer, deployer, admin_user):
    for user in (viewer, deployer):
        client = Client()
        client.force_login(user)
        response = client.get("/admin/")
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    client = Client()
    client.force_login(admin_user)
    assert client.get("/admin/").status_code == 200
