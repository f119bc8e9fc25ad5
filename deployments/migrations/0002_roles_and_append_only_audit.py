"""Create the three roles, and on PostgreSQL make the database itself refuse to change audit rows."""

from django.db import migrations

ROLES = ("viewer", "deployer", "admin")

APPEND_ONLY_SQL = """
CREATE OR REPLACE FUNCTION lynx_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER deployments_auditevent_append_only
    BEFORE UPDATE OR DELETE ON deployments_auditevent
    FOR EACH ROW EXECUTE FUNCTION lynx_audit_append_only();
"""
DROP_SQL = """
DROP TRIGGER IF EXISTS deployments_auditevent_append_only ON deployments_auditevent;
DROP FUNCTION IF EXISTS lynx_audit_append_only();
"""


def create_roles(apps, schema_editor) -> None:
    group = apps.get_model("auth", "Group")
    for name in ROLES:
        group.objects.get_or_create(name=name)


def append_only(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        # params=None: the SQL holds a literal % that must not be read as a placeholder.
        schema_editor.execute(APPEND_ONLY_SQL, params=None)


def drop_append_only(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_SQL)


class Migration(migrations.Migration):
    dependencies = [
        ("deployments", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [
        migrations.RunPython(create_roles, migrations.RunPython.noop),
        migrations.RunPython(append_only, drop_append_only),
    ]
