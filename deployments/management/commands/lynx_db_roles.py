"""PostgreSQL role separation: a login role for web, worker and beat that cannot rewrite the audit log.

The append-only trigger (migration 0002) refuses UPDATE and DELETE on audit rows, but the role that owns the
tables may drop or disable it. Run migrations as that owner, and Lynx's processes as the role this command
creates: it may read and write every table except that audit rows can only be inserted and read (no UPDATE,
DELETE or TRUNCATE), and, not owning anything, it can neither drop nor disable the trigger.

    DATABASE_URL=postgres://owner@host/lynx python manage.py lynx_db_roles lynx_app --password-env LYNX_APP_PW

Run it again after every `migrate` (it is idempotent): tables created since get their grants then too.
"""

from __future__ import annotations

import os

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, transaction
from psycopg import sql

from deployments.models import AuditEvent


class Command(BaseCommand):
    help = "Create or update the PostgreSQL login role Lynx runs as, with no way to change audit rows."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("role", help="the login role web, worker and beat connect as, e.g. lynx_app")
        parser.add_argument(
            "--password-env",
            default="",
            help="an environment variable holding its password (never on the command line); unset: unchanged",
        )

    def handle(self, *args, role: str, password_env: str, **options) -> None:
        if connection.vendor != "postgresql":
            raise CommandError("role separation is for PostgreSQL; SQLite has triggers only (migration 0009)")
        password = (os.environ.get(password_env) or None) if password_env else None
        if password is None and not _role_exists(role):
            raise CommandError(
                "a new role needs a password: set it in an environment variable named by --password-env"
            )
        with transaction.atomic(), connection.cursor() as cursor:
            for statement in self.statements(role, password):
                cursor.execute(statement)
        self.stdout.write(f"{role}: reads and writes Lynx's tables; audit rows: SELECT and INSERT only")

    @staticmethod
    def statements(role: str, password: str | None) -> list[sql.Composed]:
        name = sql.Identifier(role)
        database = sql.Identifier(connection.settings_dict["NAME"])
        audit = sql.Identifier(AuditEvent._meta.db_table)
        verb = sql.SQL("ALTER") if _role_exists(role) else sql.SQL("CREATE")
        login = sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(verb, name)
        if password is not None:
            login = sql.SQL("{} PASSWORD {}").format(login, sql.Literal(password))
        return [
            login,
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database, name),
            sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(name),
            sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}").format(name),
            sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(name),
            # The point of it all: the audit log is insert-and-read for the role Lynx runs as.
            sql.SQL("REVOKE UPDATE, DELETE, TRUNCATE ON {} FROM {}").format(audit, name),
        ]


def _role_exists(role: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
        return cursor.fetchone() is not None
