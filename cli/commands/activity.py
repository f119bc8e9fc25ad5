"""What happened and what it costs: `lynx audit`, `lynx costs`, `lynx operations`."""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterator
from datetime import date
from typing import Any

import requests

from cli.arguments import add_json_option, add_list_options, positive_int, segment
from cli.commands.account import connect
from cli.errors import ExitCode
from cli.operations import operation_wait
from cli.output import Column, print_fields, print_json, print_table, usd, when

AUDIT_COLUMNS = [
    Column("AT (UTC)", ("at", "created_at"), when, always=True),
    Column("ACTOR", ("actor", "actor_name")),
    Column("VIA", ("via", "token")),
    Column("ACTION", ("action",)),
    Column("TYPE", ("resource_type",)),
    Column("RESOURCE", ("resource_name", "resource")),
    Column("MESSAGE", ("message", "summary")),
]
OPERATION_COLUMNS = [
    Column("ID", ("id",), always=True),
    Column("KIND", ("kind",)),
    Column("RESOURCE", ("resource_name", "resource")),
    Column("STATE", ("state",)),
    Column("PHASE", ("phase",)),
    Column("PROGRESS", ("progress",)),
    Column("BY", ("requested_by", "requested_by_name")),
    Column("CREATED", ("created_at",), when),
    Column("ERROR", ("error",)),
]
CLUSTER_COST_COLUMNS = [
    Column("CLUSTER", ("name",), always=True),
    Column("TARGET", ("target",)),
    Column("STATE", ("state",)),
    Column("VM SIZE", ("vm_size",)),
    Column("NODES", ("node_count",)),
    Column("OWNER", ("owner",)),
    Column("HOURS", ("hours",)),
    Column("$/HOUR", ("per_hour",), usd),
    Column("SO FAR", ("so_far",), usd),
]
DEPLOYMENT_COST_COLUMNS = [
    Column("DEPLOYMENT", ("name",), always=True),
    Column("CLUSTER", ("cluster",)),
    Column("STATE", ("state",)),
    Column("VM SIZE", ("vm_size",)),
    Column("REPLICAS", ("replicas",)),
    Column("OWNER", ("owner",)),
    Column("HOURS", ("hours",)),
    Column("$/HOUR", ("per_hour",), usd),
    Column("SO FAR", ("so_far",), usd),
]
TOTAL_COLUMNS = [
    Column("NAME", ("name",), always=True),
    Column("RUNNING", ("running",)),
    Column("$/HOUR", ("per_hour",), usd),
    Column("SO FAR", ("so_far",), usd),
    Column("LAST 30 DAYS", ("last_30_days",), usd),
    Column("UNPRICED", ("unpriced",)),
]


def day(text: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _audit_filters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "since": args.since,
        "until": args.until,
        "action": args.action,
        "actor": args.actor,
        "resource": args.resource,
    }


def _text_lines(chunks: Iterator[bytes]) -> Iterator[str]:
    """Lines with their endings kept, which the csv module needs to read a quoted cell across lines. A UTF-8
    newline byte is never inside a character, so splitting bytes there is safe."""
    pending = b""
    for chunk in chunks:
        *complete, pending = (pending + chunk).split(b"\n")
        for line in complete:
            yield (line + b"\n").decode()
    if pending:
        yield pending.decode()


def _copy_csv(response: requests.Response, limit: int | None) -> None:
    """The server's CSV as it streams; with a limit, its header and first `limit` rows (a quoted cell may
    hold a line break, so rows are counted by the csv module, and written back in the server's dialect)."""
    if limit is None:
        for chunk in response.iter_content(64 * 1024):
            sys.stdout.buffer.write(chunk)
        return
    reader = csv.reader(_text_lines(response.iter_content(64 * 1024)))
    writer = csv.writer(sys.stdout)
    for index, row in enumerate(reader):
        if index > limit:
            break
        writer.writerow(row)


def audit(args: argparse.Namespace) -> int:
    client = connect()
    if args.csv:
        # The server's own CSV, copied through as it streams: the same file the audit page exports.
        with client.request("GET", "/audit.csv", params=_audit_filters(args), stream=True) as response:
            _copy_csv(response, args.limit)
        sys.stdout.flush()
        return ExitCode.OK
    answer = client.collect("/audit", _audit_filters(args), limit=args.limit)
    if args.json:
        print_json(answer)
    else:
        print_table(answer["items"], AUDIT_COLUMNS, empty="No audit events.")
    return ExitCode.OK


def costs(args: argparse.Namespace) -> int:
    answer = connect().get("/costs")
    if args.json:
        print_json(answer)
        return ExitCode.OK
    sections = (
        ("total", "Total", TOTAL_COLUMNS),
        ("clusters", "Clusters", CLUSTER_COST_COLUMNS),
        ("deployments", "Deployments billed one by one", DEPLOYMENT_COST_COLUMNS),
        ("owners", "Per owner", TOTAL_COLUMNS),
        ("teams", "Per team", TOTAL_COLUMNS),
    )
    for key, title, columns in sections:
        rows = answer.get(key)
        rows = [rows] if isinstance(rows, dict) else rows
        if rows:
            print(f"{title}:")
            print_table(rows, columns)
            print()
    if answer.get("unpriced_sizes"):
        print(f"No price for: {', '.join(map(str, answer['unpriced_sizes']))} (set them on the prices page)")
    if answer.get("unmanaged_per_hour"):
        print(f"Running in Azure outside Lynx: {usd(answer['unmanaged_per_hour'])}/hour")
    if answer.get("at"):
        print(f"As of {when(answer['at'])} UTC; lynx costs --json has the last 30 days, day by day.")
    return ExitCode.OK


def operations_list(args: argparse.Namespace) -> int:
    answer = connect().collect("/operations", limit=args.limit)
    if args.json:
        print_json(answer)
    else:
        print_table(answer["items"], OPERATION_COLUMNS, empty="No operations.")
    return ExitCode.OK


def operations_show(args: argparse.Namespace) -> int:
    client = connect()
    if args.wait:
        return operation_wait(client, args.id)
    operation = client.get(f"/operations/{segment(args.id)}")
    if args.json:
        print_json(operation)
        return ExitCode.OK
    lines = operation.get("lines") or []
    print_fields(
        operation, order=("id", "kind", "resource_name", "state", "phase", "progress"), skip=("lines",)
    )
    if lines:
        print()
        for line in lines:
            print(line.get("text", line) if isinstance(line, dict) else line)
    return ExitCode.OK


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "audit",
        help="the audit log, newest first",
        description="The audit log, newest first. DATE is a UTC day, YYYY-MM-DD; both ends are included.",
    )
    p.add_argument("--since", type=day, metavar="DATE")
    p.add_argument("--until", type=day, metavar="DATE")
    p.add_argument("--action", metavar="A", help="an action (deployment.create) or a family (deployment)")
    p.add_argument("--actor", metavar="U", help="a username (or system)")
    p.add_argument("--resource", metavar="NAME", help="a cluster's, deployment's or model's name")
    p.add_argument("--csv", action="store_true", help="the audit page's CSV, on stdout")
    add_list_options(p)
    p.set_defaults(handler=audit)

    p = commands.add_parser("costs", help="what runs and what it costs, per hour and so far")
    add_json_option(p)
    p.set_defaults(handler=costs)

    operations = commands.add_parser("operations", help="long actions and their progress").add_subparsers(
        dest="action", required=True, metavar="{list,show}"
    )
    p = operations.add_parser("list", help="operations, newest first")
    add_list_options(p)
    p.set_defaults(handler=operations_list)
    p = operations.add_parser("show", help="one operation and its progress lines")
    p.add_argument("id", type=positive_int)
    add_json_option(p)
    p.add_argument("--wait", action="store_true", help="follow it to its end; exit 1 if it fails")
    p.set_defaults(handler=operations_show)
