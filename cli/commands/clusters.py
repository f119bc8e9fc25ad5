"""`lynx clusters list|show|create|delete`."""

from __future__ import annotations

import argparse
from typing import Any

from cli.arguments import add_json_option, add_list_options, add_wait_option, positive_int, segment
from cli.commands.account import connect
from cli.errors import ExitCode
from cli.operations import operation_start
from cli.output import Column, print_fields, print_json, print_table, usd, when

COLUMNS = [
    Column("NAME", ("name",), always=True),
    Column("TARGET", ("target",)),
    Column("STATE", ("state", "provisioning_state")),
    Column("VM SIZE", ("vm_size",)),
    Column("NODES", ("node_count",)),
    Column("GPUS", ("gpu_count",)),
    Column("DEPLOYMENTS", ("deployments",)),
    Column("OWNER", ("owner",)),
    Column("$/HOUR", ("price_per_hour",), usd),
    Column("SO FAR", ("cost_so_far",), usd),
    Column("EXPIRES", ("expires_at",), when),
]

# The create options and the API fields they fill; unset ones are left to the server's defaults.
CREATE_FIELDS = (
    "workspace",
    "mode",
    "attach_resource_id",
    "vm_size",
    "node_count",
    "location",
    "expires_in_hours",
    "idle_teardown_hours",
    "auto_teardown",
)


def clusters_list(args: argparse.Namespace) -> int:
    answer = connect().collect("/clusters", limit=args.limit)
    if args.json:
        print_json(answer)
    else:
        print_table(answer["items"], COLUMNS, empty="No clusters.")
    return ExitCode.OK


def clusters_show(args: argparse.Namespace) -> int:
    cluster = connect().get(f"/clusters/{segment(args.name)}")
    if args.json:
        print_json(cluster)
    else:
        print_fields(cluster, order=("id", "name", "target", "state", "error"))
    return ExitCode.OK


def clusters_create(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"name": args.name, "target": args.target}
    body.update({field: getattr(args, field) for field in CREATE_FIELDS if getattr(args, field) is not None})
    return operation_start(connect(), "POST", "/clusters", body, wait=args.wait)


def clusters_delete(args: argparse.Namespace) -> int:
    return operation_start(connect(), "DELETE", f"/clusters/{segment(args.name)}", wait=args.wait)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    clusters = commands.add_parser("clusters", help="compute to deploy on").add_subparsers(
        dest="action", required=True, metavar="{list,show,create,delete}"
    )
    p = clusters.add_parser("list", help="every cluster, with its state and price")
    add_list_options(p)
    p.set_defaults(handler=clusters_list)

    p = clusters.add_parser("show", help="one cluster, by name or id")
    p.add_argument("name")
    add_json_option(p)
    p.set_defaults(handler=clusters_show)

    p = clusters.add_parser(
        "create",
        help="provision a cluster (202: an operation)",
        description="Provision a cluster. `GET /api/v1/targets` lists the targets and the fields each needs.",
    )
    p.add_argument("name")
    p.add_argument("--target", required=True, help="local, azureml_managed, … (see /api/v1/targets)")
    p.add_argument("--workspace", help="the Azure ML workspace (Azure targets)")
    p.add_argument("--mode", choices=("attach", "create"), help="azureml (AKS): attach one, or create one")
    p.add_argument(
        "--attach-resource-id", dest="attach_resource_id", metavar="ID", help="the AKS cluster's resource ID"
    )
    p.add_argument("--vm-size", dest="vm_size", help="e.g. Standard_NC6s_v3")
    p.add_argument("--node-count", dest="node_count", type=positive_int, metavar="N")
    p.add_argument("--location", help="Azure region, e.g. eastus")
    p.add_argument("--expires-in-hours", dest="expires_in_hours", type=positive_int, metavar="H")
    p.add_argument("--idle-teardown-hours", dest="idle_teardown_hours", type=positive_int, metavar="H")
    p.add_argument(
        "--auto-teardown",
        dest="auto_teardown",
        action=argparse.BooleanOptionalAction,
        help="delete it (and its deployments) when it expires or goes idle",
    )
    add_wait_option(p)
    p.set_defaults(handler=clusters_create)

    p = clusters.add_parser("delete", help="delete a cluster (202: an operation)")
    p.add_argument("name")
    add_wait_option(p)
    p.set_defaults(handler=clusters_delete)
