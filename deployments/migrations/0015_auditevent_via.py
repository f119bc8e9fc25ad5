"""Audit events say what they came through (`via`: "token ci" for the API). On SQLite, adding the column
rebuilds the table, which drops its append-only triggers: they are installed again here (see 0009)."""

import importlib

from django.db import migrations, models

_append_only = importlib.import_module("deployments.migrations.0009_sqlite_append_only_audit")


class Migration(migrations.Migration):
    dependencies = [
        ("deployments", "0014_deployment_moved_from"),
    ]

    operations = [
        migrations.AddField(
            model_name="auditevent",
            name="via",
            field=models.CharField(
                blank=True,
                default="",
                db_default="",
                help_text='what the action came through, when not the pages: "token ci"',
                max_length=80,
            ),
        ),
        migrations.RunPython(_append_only.append_only, migrations.RunPython.noop),
    ]
