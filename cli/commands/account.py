"""Signing in and out, who the token acts for, and the caller's own tokens."""

from __future__ import annotations

import argparse
import getpass
import sys
from dataclasses import replace

from cli.arguments import add_list_options, positive_int, segment
from cli.client import Client
from cli.config import config_delete, config_load, config_path, config_save
from cli.errors import CliError, ExitCode
from cli.output import Column, print_fields, print_json, print_table, when

TOKEN_COLUMNS = [
    Column("NAME", ("name",)),
    Column("PREFIX", ("prefix",)),
    Column("READ-ONLY", ("read_only",)),
    Column("STATUS", ("status",)),
    Column("CREATED", ("created_at",), when),
    Column("EXPIRES", ("expires_at",), when, always=True),
    Column("LAST USED", ("last_used_at",), when),
]


def connect() -> Client:
    return Client(config_load())


def _read_token() -> str:
    # A pipe (`echo "$TOKEN" | lynx login`) is read as is; a terminal is asked without echo.
    if not sys.stdin.isatty():
        return sys.stdin.readline().strip()
    return getpass.getpass("Token (from your Tokens page): ").strip()


def login(args: argparse.Namespace) -> int:
    current = config_load()
    url = (args.url or current.url).rstrip("/")
    token = _read_token()
    if not token:
        raise CliError("no token given", ExitCode.NOT_SIGNED_IN)
    client = Client(replace(current, url=url, token=token))
    me = client.get("/me")  # a refused token stops here (exit 3) and nothing is written
    path = config_save(url=url, token=token)
    print(f"Signed in to {url} as {_who(me)}; saved in {path}")
    return ExitCode.OK


def logout(args: argparse.Namespace) -> int:
    removed = config_delete()
    print(f"Signed out: removed {removed}" if removed else f"Not signed in (no {config_path()})")
    return ExitCode.OK


def _who(me: dict[str, object]) -> str:
    user = me.get("user") if isinstance(me.get("user"), dict) else me
    assert isinstance(user, dict)
    name = user.get("username") or me.get("username") or "?"
    role = user.get("role") or me.get("role")
    return f"{name} ({role})" if role else str(name)


def whoami(args: argparse.Namespace) -> int:
    client = connect()
    me = client.get("/me")
    if args.json:
        print_json(me)
        return ExitCode.OK
    config = client.config
    where = {"server": f"{config.url} (from {config.url_source}; token from {config.token_source})"}
    print_fields({**me, **where}, order=("username", "role", "teams", "token", "server"))
    return ExitCode.OK


def tokens_list(args: argparse.Namespace) -> int:
    answer = connect().collect("/tokens", limit=args.limit)
    if args.json:
        print_json(answer)
    else:
        print_table(answer["items"], TOKEN_COLUMNS, empty="No tokens.")
    return ExitCode.OK


def tokens_create(args: argparse.Namespace) -> int:
    body: dict[str, object] = {"name": args.name, "read_only": args.read_only}
    if args.expires_days is not None:
        body["expires_days"] = args.expires_days
    answer = connect().send("POST", "/tokens", body)
    if args.json:
        print_json(answer)
        return ExitCode.OK
    secret = answer.get("token") or answer.get("secret")
    if not isinstance(secret, str):
        raise CliError("Lynx made the token but its answer holds no secret", ExitCode.UNREACHABLE)
    # Only the secret on stdout, so `TOKEN=$(lynx tokens create ci)` works; the warning goes to stderr.
    print(secret)
    print(f"lynx: token {args.name!r} made; it is shown once, keep it now", file=sys.stderr)
    return ExitCode.OK


def tokens_revoke(args: argparse.Namespace) -> int:
    connect().request("DELETE", f"/tokens/{segment(args.name)}")
    print(f"Revoked token {args.name}")
    return ExitCode.OK


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("login", help="save the URL and a token in the config file")
    p.add_argument(
        "--url", help="Lynx's address (default: LYNX_URL, the saved one, or http://127.0.0.1:8000)"
    )
    p.set_defaults(handler=login)

    p = commands.add_parser("logout", help="forget the saved token")
    p.set_defaults(handler=logout)

    p = commands.add_parser("whoami", help="who the token acts for")
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    p.set_defaults(handler=whoami)

    tokens = commands.add_parser("tokens", help="your API tokens").add_subparsers(
        dest="action", required=True, metavar="{list,create,revoke}"
    )
    p = tokens.add_parser("list", help="your tokens")
    add_list_options(p)
    p.set_defaults(handler=tokens_list)
    p = tokens.add_parser("create", help="make a token: it is printed once")
    p.add_argument("name")
    p.add_argument("--expires-days", type=positive_int, metavar="N", help="default: never")
    p.add_argument("--read-only", action="store_true", help="the token can only read")
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    p.set_defaults(handler=tokens_create)
    p = tokens.add_parser("revoke", help="revoke one of your tokens by name")
    p.add_argument("name")
    p.set_defaults(handler=tokens_revoke)
