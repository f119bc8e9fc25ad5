"""Every destructive action has a confirmation page that works without JavaScript: the deployment page links
to it from a <noscript> (the JavaScript dialog stays for everyone else), it says what will happen, and its
form posts to the action's own endpoint. Reloading a key page never lands on a 405; rollbacks are labelled
in the history."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from django.contrib.messages import get_messages
from django.test import Client

from deployments.crypto import encrypt
from deployments.models import AuditEvent, Cluster, Deployment, Operation, OperationKind, Workspace
from deployments.services.deployments import deployment_rollback, deployment_update
from deployments.services.operations import operation_transition
from deployments.services.transitions import deployment_transition
from deployments.states import OperationState, ServiceState
from tests.deployments.conftest import login
from tests.deployments.factories import ready_cluster, start_deployment

pytestmark = pytest.mark.django_db


class _ConfirmForm(HTMLParser):
    """The POST form of a confirmation page: where it posts, and every field it sends (repeated names too)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.action = ""
        self.fields: list[tuple[str, str]] = []
        self._inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {key: value or "" for key, value in attrs}
        if tag == "form" and a.get("method") == "post" and not self.action:
            self._inside, self.action = True, a["action"]
        elif tag == "input" and self._inside and a.get("type") == "hidden":
            self.fields.append((a["name"], a.get("value", "")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._inside = False


def confirm_form(html: str) -> _ConfirmForm:
    section = html[html.index('id="confirm"') :]
    parser = _ConfirmForm()
    parser.feed(section)
    assert parser.action, "the confirmation page has no POST form"
    return parser


def submit(client: Client, url: str):
    """Open a confirmation page and press its button, as a person without JavaScript would."""
    page = client.get(url)
    assert page.status_code == 200, page
    form = confirm_form(page.content.decode())
    data: dict[str, list[str]] = {}
    for name, value in form.fields:
        data.setdefault(name, []).append(value)
    return page.content.decode(), client.post(form.action, data)


def flashes(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def healthy(deployment: Deployment, scoring_uri: str = "http://127.0.0.1:9/score") -> Deployment:
    """The deployment as a finished deploy or update leaves it (no replicas run: nothing here scores)."""
    for operation in deployment.operations.filter(state__in=(OperationState.QUEUED, OperationState.RUNNING)):
        if operation.state == OperationState.QUEUED:
            operation = operation_transition(operation=operation, to=OperationState.RUNNING)
        operation_transition(operation=operation, to=OperationState.SUCCEEDED)
    deployment.refresh_from_db()
    return deployment_transition(
        deployment=deployment, to=ServiceState.HEALTHY, scoring_uri=scoring_uri, swagger_uri=""
    )


@pytest.fixture
def live(deployer, demo_model) -> Deployment:
    cluster = ready_cluster(deployer, "local-confirm")
    return healthy(start_deployment(deployer, cluster, demo_model, name="digits-live").deployment)


@pytest.fixture
def two_revisions(deployer, live) -> Deployment:
    """Revision 2 (two replicas) runs; revision 1 (one) can be rolled back to."""
    deployment_update(user=deployer, deployment=live, replicas=2)
    return healthy(live)


def test_the_deployment_page_links_each_destructive_action_to_its_confirmation_without_javascript(
    deployer, two_revisions
):
    pk = two_revisions.pk
    page = login(deployer).get(f"/deployments/{pk}/").content.decode()
    noscript = "".join(re.findall(r"<noscript>(.*?)</noscript>", page, re.S))
    for href, label in [
        (f"/deployments/{pk}/delete/confirm/", "Delete deployment"),
        (f"/deployments/{pk}/keys/regenerate/confirm/?key=Primary", "Regenerate primary"),
        (f"/deployments/{pk}/keys/regenerate/confirm/?key=Secondary", "Regenerate secondary"),
        (f"/deployments/{pk}/rollback/confirm/?revision=1", "Roll back to 1"),
    ]:
        assert f'href="{href}">{label}</a>' in noscript, (href, label)
    # The POST forms stay for JavaScript's dialog, and are the ones hidden without it.
    for action in ("delete", "rollback", "keys/regenerate"):
        form = re.search(rf'<form method="post" action="/deployments/{pk}/{action}/"[^>]*>', page)
        assert form and "needs-js" in form.group(0) and "data-confirm" in form.group(0), action
    assert "form.needs-js { display:none" in noscript


def test_a_delete_confirmed_on_its_page_starts_the_delete_and_shows_the_operation(deployer, live):
    text, response = submit(login(deployer), f"/deployments/{live.pk}/delete/confirm/")
    assert "Delete deployment digits-live?" in text
    assert "digits-live stops answering at http://127.0.0.1:9/score" in text
    assert "replicas on this machine are stopped" in text
    operation = Operation.objects.get(kind=OperationKind.SERVICE_DELETE, deployment=live)
    assert response.status_code == 302 and response["Location"] == f"/operations/{operation.pk}/"
    live.refresh_from_db()
    assert live.state == ServiceState.DELETING
    assert AuditEvent.objects.get(action="deployment.delete", resource_id=live.pk).actor_name == "dana"


def test_a_rollback_confirmation_says_what_it_deploys_and_rolls_back(deployer, two_revisions):
    text, response = submit(login(deployer), f"/deployments/{two_revisions.pk}/rollback/confirm/?revision=1")
    assert "Roll digits-live back to revision 1?" in text
    assert "revision 1&#x27;s configuration: model digits:1, 1 replica," in text
    assert "That becomes revision 3" in text and "revision 2, which runs now, stays" in text
    operation = Operation.objects.get(kind=OperationKind.SERVICE_UPDATE, state=OperationState.QUEUED)
    assert response["Location"] == f"/operations/{operation.pk}/"
    assert operation.params["revision"] == 3
    assert AuditEvent.objects.get(action="deployment.rollback").message == "rollback to revision 1"


def test_a_key_regeneration_confirmation_names_the_key_that_stops_working(deployer, live):
    text, response = submit(login(deployer), f"/deployments/{live.pk}/keys/regenerate/confirm/?key=Secondary")
    assert "Regenerate the secondary key of digits-live?" in text
    assert "The primary key keeps working" in text
    operation = Operation.objects.get(kind=OperationKind.SERVICE_KEY_REGENERATE)
    assert response["Location"] == f"/operations/{operation.pk}/" and operation.params == {"key": "Secondary"}


@pytest.fixture
def canary(deployer, demo_model) -> Deployment:
    """A managed online endpoint with revision 2 as a 10 % canary beside revision 1 (rows only: no Azure)."""
    workspace = Workspace.objects.create(
        name="ws-confirm",
        subscription_id="sub",
        resource_group="rg",
        workspace_name="ws",
        tenant_id="t",
        client_id="c",
        client_secret_encrypted=encrypt("s3cret"),
    )
    cluster = Cluster.objects.create(
        name="managed-1", backend="azureml_managed", workspace=workspace, provisioning_state="Succeeded"
    )
    return Deployment.objects.create(
        name="digits-canary",
        cluster=cluster,
        model=demo_model,
        entry_script="",
        environment_yaml="",
        owner=deployer,
        state=ServiceState.HEALTHY,
        revision=2,
        stats={"traffic": {"1": 90, "2": 10}},
    )


@pytest.mark.parametrize(
    ("action", "says", "percent"),
    [
        ("complete", "Revision 2 gets 100 % of the requests (it gets 10 % now).", 100),
        ("rollback", "Revision 1 gets all the requests back (it gets 90 % now).", 0),
    ],
)
def test_ending_a_canary_is_confirmed_on_its_own_page(deployer, canary, action, says, percent):
    client = login(deployer)
    page = client.get(f"/deployments/{canary.pk}/").content.decode()
    assert f'href="/deployments/{canary.pk}/traffic/confirm/?action={action}"' in page
    text, response = submit(client, f"/deployments/{canary.pk}/traffic/confirm/?action={action}")
    assert says in text
    operation = Operation.objects.get(kind=OperationKind.SERVICE_TRAFFIC)
    assert response["Location"] == f"/operations/{operation.pk}/" and operation.params["percent"] == percent


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("rollback/confirm/", "has no revision (none chosen)"),
        ("rollback/confirm/?revision=1", "Revision 1 is what digits-live runs now."),
        ("rollback/confirm/?revision=7", "has no revision 7"),
        ("keys/regenerate/confirm/?key=Tertiary", "Choose the Primary or the Secondary key"),
        ("traffic/confirm/?action=complete", "has no canary to complete or roll back"),
    ],
)
def test_a_confirmation_without_a_valid_choice_goes_back_saying_why(deployer, live, query, says):
    response = login(deployer).get(f"/deployments/{live.pk}/{query}")
    assert response.status_code == 302 and response["Location"].startswith(f"/deployments/{live.pk}/")
    assert any(says in message for message in flashes(response)), flashes(response)
    assert not Operation.objects.filter(deployment=live).exclude(kind=OperationKind.SERVICE_DEPLOY).exists()


def test_a_deployment_already_going_has_nothing_to_confirm(deployer, live):
    login(deployer).post(f"/deployments/{live.pk}/delete/", {"idempotency_key": "once"})
    response = login(deployer).get(f"/deployments/{live.pk}/delete/confirm/")
    assert response.status_code == 302 and "digits-live is already deleting." in flashes(response)


def test_a_viewer_gets_no_confirmation_page_and_no_link_to_one(viewer, live):
    client = login(viewer)
    assert client.get(f"/deployments/{live.pk}/delete/confirm/").status_code == 403
    assert "/confirm/" not in client.get(f"/deployments/{live.pk}/").content.decode()


def test_reloading_a_revealed_key_goes_back_to_the_keys_and_reveals_nothing_more(deployer, live):
    client = login(deployer)
    url = f"/deployments/{live.pk}/keys/reveal/"
    assert client.post(url, {"key": "Primary"}).status_code == 200
    reload = client.get(url)
    assert reload.status_code == 302 and reload["Location"] == f"/deployments/{live.pk}/#keys"
    assert any("shown once" in message for message in flashes(reload))
    assert AuditEvent.objects.filter(action="deployment.key_reveal").count() == 1
    regenerate = client.get(f"/deployments/{live.pk}/keys/regenerate/")
    assert regenerate.status_code == 302
    assert not Operation.objects.filter(kind=OperationKind.SERVICE_KEY_REGENERATE).exists()


def test_a_revision_made_by_a_rollback_says_which_revision_it_rolled_back_to(deployer, two_revisions):
    deployment_rollback(user=deployer, deployment=two_revisions, number=1)
    healthy(two_revisions)
    page = login(deployer).get(f"/deployments/{two_revisions.pk}/").content.decode()
    rows = {int(n): row for n, row in re.findall(r"<tr><td>(\d+)(.*?)</tr>", page, re.S)}
    assert "rollback to r1" in rows[3]
    assert "rollback to" not in rows[2] and "rollback to" not in rows[1]


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_without_javascript_a_delete_is_confirmed_on_its_page_and_lands_on_the_operation(
    no_js_page, deployer, demo_model
):
    cluster = ready_cluster(deployer, "local-nojs")
    deployment = healthy(start_deployment(deployer, cluster, demo_model, name="digits-nojs").deployment)
    page = no_js_page("dana", "pw-dana")
    page.goto(f"/deployments/{deployment.pk}/")
    # Without JavaScript no dialog could ask: the POST button is hidden, a link to the confirmation shown.
    assert page.locator("form.needs-js button:has-text('Delete deployment')").is_hidden()
    page.click("a:has-text('Delete deployment')")
    assert page.url.endswith(f"/deployments/{deployment.pk}/delete/confirm/")
    assert "digits-nojs stops answering" in page.inner_text("#confirm")
    page.click("#confirm button:has-text('Delete deployment')")
    operation = Operation.objects.get(kind=OperationKind.SERVICE_DELETE)
    assert page.url.endswith(f"/operations/{operation.pk}/")
    assert page.inner_text("h1") == "Delete service: digits-nojs"
    assert Deployment.objects.get(pk=deployment.pk).state == ServiceState.DELETING
    assert AuditEvent.objects.filter(action="deployment.delete", actor_name="dana").count() == 1
