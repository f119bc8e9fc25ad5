"""What every endpoint shares: the OpenAPI document, the docs page, list pages, the rate, operations."""

from __future__ import annotations

import csv
import io

import pytest
from django.core.cache import caches
from openapi_spec_validator import validate

from deployments.models import AuditEvent
from deployments.services.audit import audit_record
from tests.api.conftest import bearer
from tests.deployments.factories import ready_cluster

pytestmark = pytest.mark.django_db


def test_the_openapi_document_validates_and_names_every_answer(client):
    document = client.get("/api/v1/openapi.json").json()
    validate(document)  # raises on anything the OpenAPI 3.1 schema refuses
    assert document["openapi"].startswith("3.1")
    assert document["components"]["securitySchemes"]["TokenAuth"]["scheme"] == "bearer"
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            assert operation.get("summary"), f"{method.upper()} {path} has no summary"
            assert {"401", "403"} <= set(operation["responses"]), f"{method.upper()} {path} lacks 401/403"


def test_the_docs_page_is_served_from_lynx_without_a_cdn(client):
    page = client.get("/api/v1/docs").content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in page and "/static/ninja/swagger-ui.css" in page
    assert "cdn" not in page.lower() and "https://" not in page
    assert client.get("/static/ninja/swagger-ui-bundle.js").status_code == 200


def test_operations_read_with_their_lines_after_a_given_line(client, viewer, deployer, token_for):
    cluster = ready_cluster(deployer, "ops-1")
    operation = cluster.operations.get()
    first = operation.lines.create(text="one")
    operation.lines.create(text="two")
    secret = token_for(viewer)
    body = client.get(f"/api/v1/operations/{operation.pk}", **bearer(secret)).json()
    assert body["state"] == "succeeded" and body["finished"] and body["resource_name"] == "ops-1"
    assert body["resource_type"] == "cluster" and body["url"] == f"/api/v1/operations/{operation.pk}"
    assert [line["text"] for line in body["lines"]][-2:] == ["one", "two"]
    later = client.get(f"/api/v1/operations/{operation.pk}?after_line={first.pk}", **bearer(secret)).json()
    assert [line["text"] for line in later["lines"]] == ["two"]
    listed = client.get("/api/v1/operations?state=succeeded", **bearer(secret)).json()
    assert (
        [item["id"] for item in listed["items"]] == [operation.pk]
        and "lines" not in listed["items"][0]
        or (listed["items"][0]["lines"] is None)
    )
    missing = client.get("/api/v1/operations/999999", **bearer(secret))
    assert missing.status_code == 404 and missing.json()["detail"] == "No operation 999999."


def test_lists_are_pages_in_a_stable_order_read_on_with_the_cursor(client, viewer, token_for):
    for number in range(7):
        audit_record(actor=viewer, action="price.update", resource=f"size-{number}")
    secret = token_for(viewer)  # one more event: token.create
    seen, cursor = [], ""
    while True:
        body = client.get(f"/api/v1/audit?limit=3&cursor={cursor}", **bearer(secret)).json()
        seen += [item["id"] for item in body["items"]]
        if not body["next_cursor"]:
            break
        cursor = body["next_cursor"]
    assert seen == sorted(AuditEvent.objects.values_list("pk", flat=True), reverse=True)
    assert len(seen) == 8
    bad = client.get("/api/v1/audit?cursor=abc", **bearer(secret))
    assert bad.status_code == 400 and bad.json()["errors"]["cursor"]
    too_many = client.get("/api/v1/audit?limit=5000", **bearer(secret))
    assert too_many.status_code == 400 and "limit" in too_many.json()["errors"]


def test_the_audit_log_filters_as_the_page_and_exports_the_same_csv(client, viewer, deployer, token_for):
    ready_cluster(deployer, "audit-1")
    audit_record(actor=viewer, action="price.update", resource="Standard_NC6")
    secret = token_for(viewer, "ci")
    family = client.get("/api/v1/audit?action=cluster", **bearer(secret)).json()["items"]
    assert family and {item["action"].split(".")[0] for item in family} == {"cluster"}
    mine = client.get("/api/v1/audit?actor=vera", **bearer(secret)).json()["items"]
    assert {item["action"] for item in mine} == {"price.update", "token.create"}
    bad = client.get("/api/v1/audit?since=2026-02-01&until=2026-01-01", **bearer(secret))
    assert bad.status_code == 400 and bad.json()["errors"]["until"] == [
        "The end date is before the start date."
    ]
    exported = client.get("/api/v1/audit.csv?actor=vera", **bearer(secret))
    assert exported["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(exported.streaming_content).decode())))
    assert {row["action"] for row in rows} == {"price.update", "token.create"}
    assert "via" in rows[0]


def test_over_the_rate_a_token_gets_429_with_retry_after_and_others_are_not_slowed(
    client, settings, viewer, deployer, token_for
):
    settings.LYNX_API_RATE = "3/m"
    caches["api"].clear()
    busy, calm = token_for(viewer, "busy"), token_for(deployer, "calm")
    answers = [client.get("/api/v1/me", **bearer(busy)).status_code for _ in range(4)]
    assert answers == [200, 200, 200, 429]
    refused = client.get("/api/v1/me", **bearer(busy))
    assert int(refused["Retry-After"]) > 0
    assert client.get("/api/v1/me", **bearer(calm)).status_code == 200


def test_targets_list_what_lynx_deploys_to(client, viewer, token_for):
    kinds = {t["kind"]: t for t in client.get("/api/v1/targets", **bearer(token_for(viewer))).json()}
    assert kinds["local"]["on_this_host"] and not kinds["azureml_managed"]["cluster_resource"]


def test_a_page_of_deployments_costs_the_same_queries_however_many_there_are(client, deployer, token_for):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from deployments.models import Deployment, RegisteredModel

    cluster = ready_cluster(deployer, "many-1")
    model = RegisteredModel.objects.create(name="digits", version=1, path="x", labels="a")
    secret = token_for(deployer)

    def queries(count: int) -> int:
        Deployment.objects.bulk_create(
            Deployment(name=f"d{count}-{i}", cluster=cluster, model=model, owner=deployer, state="Healthy")
            for i in range(count)
        )
        client.get("/api/v1/deployments", **bearer(secret))  # the token's last-used write happens once
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/api/v1/deployments?limit=50", **bearer(secret)).status_code == 200
        return len(captured.captured_queries)

    assert queries(2) == queries(40)
