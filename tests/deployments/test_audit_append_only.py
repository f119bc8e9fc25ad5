"""The audit log is append-only: the application never updates or deletes a row, and the database itself
refuses to (on PostgreSQL the trigger from migration 0002, on SQLite the triggers from 0009)."""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from dashboard.people import user_role_set, user_team_set
from deployments.models import AuditEvent, Cluster, OperationKind, VmPrice
from deployments.services.deployments import deployment_delete
from deployments.services.expiry import cluster_expiry_cancel, cluster_expiry_extend, clusters_expiry_check
from deployments.services.operations import operation_transition
from deployments.services.prices import vm_price_set, vm_prices_seed
from deployments.services.transitions import cluster_transition, deployment_transition
from deployments.states import OperationState, ProvisioningState, ServiceState
from tests.deployments.factories import ready_cluster, start_deployment

pytestmark = pytest.mark.django_db

WRITES_TO_AUDIT = re.compile(r'^\s*(UPDATE|DELETE\s+FROM)\s+"?deployments_auditevent"?', re.I)


def _finish(operation, deployment=None) -> None:
    operation_transition(operation=operation, to=OperationState.RUNNING)
    if deployment is not None:
        deployment_transition(deployment=deployment, to=ServiceState.DELETED)
    operation_transition(operation=operation, to=OperationState.SUCCEEDED)


def test_a_stored_audit_event_cannot_be_saved_again_or_deleted(deployer):
    ready_cluster(deployer, "local-1")
    event = AuditEvent.objects.first()
    event.message = "rewritten"
    with pytest.raises(PermissionError, match="append-only"):
        event.save()
    with pytest.raises(PermissionError, match="append-only"):
        event.delete()
    assert AuditEvent.objects.get(pk=event.pk).message != "rewritten"


def test_everything_the_application_does_only_ever_inserts_audit_rows(
    deployer, viewer, admin_user, demo_model
):
    """Every kind of action, with the SQL captured: audit rows are inserted, never updated or deleted."""
    with CaptureQueriesContext(connection) as captured:
        vm_prices_seed()
        vm_price_set(
            user=admin_user, price=VmPrice.objects.get(vm_size="local"), price_per_hour=Decimal("0.3")
        )
        user_role_set(actor=admin_user, user=viewer, role="deployer")
        user_team_set(actor=admin_user, user=viewer, team="vision")
        cluster = ready_cluster(deployer, "local-1")
        deploy = start_deployment(deployer, cluster, demo_model)
        deployment = deploy.deployment
        operation_transition(operation=deploy, to=OperationState.RUNNING)
        deployment_transition(deployment=deployment, to=ServiceState.HEALTHY)
        operation_transition(operation=deploy, to=OperationState.SUCCEEDED)
        Cluster.objects.filter(pk=cluster.pk).update(
            expires_at=timezone.now() + timedelta(minutes=5), auto_teardown=True
        )
        clusters_expiry_check()  # a warning
        cluster_expiry_extend(user=deployer, cluster=cluster, hours=1)
        cluster_expiry_cancel(user=deployer, cluster=cluster)
        deleting = deployment_delete(user=deployer, deployment=deployment)
        _finish(deleting, deployment)
        Cluster.objects.filter(pk=cluster.pk).update(expires_at=timezone.now(), auto_teardown=True)
        clusters_expiry_check()  # the automatic teardown
        gone = cluster.operations.get(kind=OperationKind.CLUSTER_DELETE)
        operation_transition(operation=gone, to=OperationState.RUNNING)
        cluster.refresh_from_db()
        cluster_transition(cluster=cluster, to=ProvisioningState.DELETED)
        client = Client()
        client.force_login(viewer)
        for url in ("/", reverse("audit_list"), reverse("audit_export")):
            response = client.get(url)
            assert response.status_code == 200
            if response.streaming:
                b"".join(response.streaming_content)
    inserts = [
        q["sql"] for q in captured if re.match(r'\s*INSERT INTO "?deployments_auditevent"?', q["sql"], re.I)
    ]
    assert len(inserts) >= 20  # the capture did see the audit trail being written
    rewrites = [q["sql"] for q in captured if WRITES_TO_AUDIT.match(q["sql"])]
    assert rewrites == []


def test_no_code_updates_or_deletes_audit_rows():
    """Belt and braces for code paths the test above does not run: no module asks for it."""
    offenders = []
    for app in ("dashboard", "deployments", "scoring", "workers"):
        for path in Path(settings.BASE_DIR, app).rglob("*.py"):
            if "migrations" in path.parts:
                continue  # 0002 installs the trigger that refuses UPDATE and DELETE
            text = path.read_text()
            for match in re.finditer(
                r"AuditEvent\.objects[^\n;]*?\.(update|delete|bulk_update|update_or_create)\(", text
            ):
                offenders.append(f"{path}: {match.group(0)}")
            if re.search(r"(UPDATE|DELETE\s+FROM)\s+\"?deployments_auditevent", text, re.I):
                offenders.append(f"{path}: raw SQL on deployments_auditevent")
    assert offenders == []


def test_the_database_refuses_to_update_or_delete_audit_rows(deployer):
    """PostgreSQL (0002) and SQLite (0009) alike: bulk ORM writes and raw SQL are refused by the database."""
    ready_cluster(deployer, "local-1")
    event = AuditEvent.objects.order_by("id").first()
    attempts = {
        "ORM update": lambda: AuditEvent.objects.filter(pk=event.pk).update(message="rewritten"),
        "ORM delete": lambda: AuditEvent.objects.filter(pk=event.pk).delete(),
        "raw UPDATE": lambda: connection.cursor().execute(
            "UPDATE deployments_auditevent SET actor_name = %s WHERE id = %s", ["mallory", event.pk]
        ),
        "raw DELETE": lambda: connection.cursor().execute(
            "DELETE FROM deployments_auditevent WHERE id = %s", [event.pk]
        ),
    }
    for what, attempt in attempts.items():
        with pytest.raises(DatabaseError, match="append-only") as refused, transaction.atomic():
            attempt()
        assert refused.value is not None, what
    stored = AuditEvent.objects.get(pk=event.pk)
    assert (stored.message, stored.actor_name) == (event.message, event.actor_name)


sqlite_only = pytest.mark.skipif(
    connection.vendor != "sqlite", reason=f"SQLite's own file and shell; this run uses {connection.vendor}"
)


def _sqlite_shell(database: str, sql: str) -> tuple[int, str]:
    """Run SQL the way someone at the sqlite3 shell would: its own process, outside Django."""
    if shutil.which("sqlite3"):
        done = subprocess.run(["sqlite3", database, sql], capture_output=True, text=True, timeout=30)
        return done.returncode, done.stderr
    with sqlite3.connect(database) as raw:  # no shell installed: the same library, its own connection
        try:
            raw.execute(sql)
        except sqlite3.DatabaseError as exc:
            return 1, str(exc)
    return 0, ""


@sqlite_only
@pytest.mark.django_db(transaction=True)  # committed rows, which another process can see
def test_the_sqlite3_shell_cannot_change_audit_rows(deployer):
    ready_cluster(deployer, "local-1")
    event = AuditEvent.objects.order_by("id").first()
    database = connection.settings_dict["NAME"]

    for sql in (
        f"UPDATE deployments_auditevent SET actor_name = 'mallory' WHERE id = {event.pk}",
        f"DELETE FROM deployments_auditevent WHERE id = {event.pk}",
        "DELETE FROM deployments_auditevent",
    ):
        returncode, stderr = _sqlite_shell(database, sql)
        assert returncode != 0 and "append-only" in stderr, (sql, returncode, stderr)
    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.actor_name == event.actor_name


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_flush_still_empties_the_database_and_keeps_the_audit_triggers(deployer):
    """`manage.py flush` (and every transactional test's teardown) empties the whole database, the audit log
    included, as TRUNCATE does on PostgreSQL; the triggers are back in place afterwards."""
    ready_cluster(deployer, "local-1")
    assert AuditEvent.objects.exists()

    call_command("flush", interactive=False, verbosity=0)

    assert not AuditEvent.objects.exists()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s",
            [AuditEvent._meta.db_table],
        )
        triggers = sorted(row[0] for row in cursor.fetchall())
    assert triggers == ["deployments_auditevent_no_delete", "deployments_auditevent_no_update"]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL roles")
@pytest.mark.django_db(transaction=True)  # the grants and the row must be committed for the role to see them
def test_the_app_role_can_insert_audit_rows_but_neither_rewrite_nor_unguard_them(deployer, monkeypatch):
    role = f"lynx_app_{uuid4().hex[:8]}"  # roles are server-wide: a name no other test run uses
    password = uuid4().hex
    monkeypatch.setenv("LYNX_TEST_APP_PW", password)
    call_command("lynx_db_roles", role, password_env="LYNX_TEST_APP_PW", verbosity=0)
    call_command("lynx_db_roles", role, verbosity=0)  # idempotent: a second run after a migrate
    ready_cluster(deployer, "local-1")
    event = AuditEvent.objects.order_by("id").first()
    db = connection.settings_dict
    as_app = psycopg.connect(
        host=db["HOST"] or "127.0.0.1",
        port=db["PORT"] or 5432,
        dbname=db["NAME"],
        user=role,
        password=password,
        autocommit=True,
    )
    try:
        with as_app.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM deployments_auditevent")
            assert cursor.fetchone()[0] >= 1
            cursor.execute(
                "INSERT INTO deployments_auditevent (created_at, actor_name, action, resource_type,"
                " resource_name, before, after, message) VALUES (now(), 'system', 'role.check', 'test', 'x',"
                " '{}', '{}', '')"
            )
            cursor.execute("UPDATE deployments_cluster SET owner_id = owner_id")  # ordinary tables: writable
            for refused in (
                f"UPDATE deployments_auditevent SET actor_name = 'mallory' WHERE id = {event.pk}",
                f"DELETE FROM deployments_auditevent WHERE id = {event.pk}",
                "TRUNCATE deployments_auditevent",
                "ALTER TABLE deployments_auditevent DISABLE TRIGGER deployments_auditevent_append_only",
                "DROP TRIGGER deployments_auditevent_append_only ON deployments_auditevent",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    cursor.execute(refused)
    finally:
        as_app.close()
        with connection.cursor() as cursor:
            cursor.execute(f'DROP OWNED BY "{role}"')
            cursor.execute(f'DROP ROLE "{role}"')
    assert AuditEvent.objects.get(pk=event.pk).actor_name == event.actor_name
