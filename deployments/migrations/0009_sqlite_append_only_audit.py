"""On SQLite too, the database itself refuses to change audit rows: triggers abort UPDATE and DELETE on
deployments_auditevent, whoever asks (the ORM's bulk update()/delete(), raw SQL, the sqlite3 shell).
PostgreSQL has had its trigger since 0002.

Whoever can write the SQLite file can still drop the triggers: this stops mistakes and casual edits, not an
attacker holding the file. SQLite drops a table's triggers with the table, and Django's SQLite schema
editor rebuilds a table for most field changes: a later migration that alters AuditEvent must install these
triggers again (tests/deployments/test_audit_append_only.py fails until it does)."""

from django.db import migrations

SQLITE_TRIGGERS = (
    """
    CREATE TRIGGER IF NOT EXISTS deployments_auditevent_no_update
    BEFORE UPDATE ON deployments_auditevent
    BEGIN
        SELECT RAISE(ABORT, 'audit events are append-only (UPDATE refused)');
    END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS deployments_auditevent_no_delete
    BEFORE DELETE ON deployments_auditevent
    BEGIN
        SELECT RAISE(ABORT, 'audit events are append-only (DELETE refused)');
    END
    """,
)
SQLITE_DROP = (
    "DROP TRIGGER IF EXISTS deployments_auditevent_no_update",
    "DROP TRIGGER IF EXISTS deployments_auditevent_no_delete",
)


def append_only(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "sqlite":
        for sql in SQLITE_TRIGGERS:
            schema_editor.execute(sql, params=None)


def drop_append_only(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "sqlite":
        for sql in SQLITE_DROP:
            schema_editor.execute(sql, params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("deployments", "0008_price_history"),
    ]

    operations = [
        migrations.RunPython(append_only, drop_append_only),
    ]
