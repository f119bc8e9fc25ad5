"""`manage.py lynx_token create USER --name NAME [--expires-days N] [--read-only]`: prints only the token.

Also `list [USER]` and `revoke USER NAME`. Run by whoever holds the server: the audit log records the
system as the actor.
"""

from __future__ import annotations

from argparse import ArgumentParser

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError

from api.models import ApiToken
from api.tokens import token_create, token_revoke
from deployments.services import Refused


class Command(BaseCommand):
    help = "Create, list or revoke API tokens."

    def add_arguments(self, parser: ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help="make a token and print it (only it) on stdout")
        create.add_argument("username")
        create.add_argument("--name", required=True)
        create.add_argument("--expires-days", type=int, default=None)
        create.add_argument("--read-only", action="store_true")
        listing = actions.add_parser("list", help="tokens (not the secrets) of one person or everyone")
        listing.add_argument("username", nargs="?")
        revoke = actions.add_parser("revoke", help="revoke a person's token by name")
        revoke.add_argument("username")
        revoke.add_argument("name")

    def _user(self, username: str) -> User:
        user = User.objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user {username}.")
        return user

    def handle(self, *args, action: str, **options) -> None:
        try:
            if action == "create":
                owner = self._user(options["username"])
                new = token_create(
                    actor=None,  # the shell acts as the system
                    owner=owner,
                    name=options["name"],
                    expires_days=options["expires_days"],
                    read_only=options["read_only"],
                )
                self.stdout.write(new.secret)
            elif action == "revoke":
                owner = self._user(options["username"])
                token_revoke(actor=None, owner=owner, name=options["name"])
                self.stderr.write(f"Revoked {owner.get_username()}'s token {options['name']}.")
            else:
                tokens = ApiToken.objects.select_related("user")
                if options.get("username"):
                    tokens = tokens.filter(user=self._user(options["username"]))
                for token in tokens:
                    used = f"{token.last_used_at:%Y-%m-%d %H:%M}" if token.last_used_at else "never"
                    expires = f"{token.expires_at:%Y-%m-%d}" if token.expires_at else "never"
                    access = "read-only" if token.read_only else "read-write"
                    self.stdout.write(
                        f"{token.user.get_username()}\t{token.name}\t{token.prefix}…\t{access}\t"
                        f"{token.status}\tlast used {used}\texpires {expires}"
                    )
        except Refused as exc:
            raise CommandError(str(exc)) from exc
