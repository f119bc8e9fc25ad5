"""`manage.py flush`, able to empty the audit log on SQLite as TRUNCATE does on PostgreSQL.

Migration 0009's triggers make SQLite refuse every DELETE on deployments_auditevent, and Django's flush is a
DELETE FROM per table there (PostgreSQL's TRUNCATE fires no row trigger). So on SQLite this flush drops the
two triggers, empties the tables and installs the triggers again, in the one transaction Django's flush
already uses: the audit log is never left unguarded. Every transactional test's teardown runs it too.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import import_module

from django.core.management.commands import flush
from django.db import connections

# Must be imported by path: a migration's module name starts with a digit.
_triggers = import_module("deployments.migrations.0009_sqlite_append_only_audit")


class Command(flush.Command):
    def handle(self, **options) -> None:
        connection = connections[options["database"]]
        if connection.vendor != "sqlite":
            return super().handle(**options)
        execute_sql_flush = connection.ops.execute_sql_flush

        def flush_around_triggers(sql_list: Iterable[str]) -> None:
            # One list, so one transaction: Django's execute_sql_flush runs it inside atomic().
            execute_sql_flush([*_triggers.SQLITE_DROP, *sql_list, *_triggers.SQLITE_TRIGGERS])

        # Shadowing the method on this one instance, for the length of the flush, is the point.
        connection.ops.execute_sql_flush = flush_around_triggers  # type: ignore[method-assign]
        try:
            return super().handle(**options)
        finally:
            del connection.ops.execute_sql_flush  # back to the class's own method
