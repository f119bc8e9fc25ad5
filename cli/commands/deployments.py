"""`lynx deploy` and `lynx deployments list|show|update|rollback|traffic|delete|revisions`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cli.arguments import (
    add_json_option,
    add_list_options,
    add_wait_option,
    autoscale,
    model_ref,
    number,
    percent,
    positive_int,
    segment,
)
from cli.commands.account import connect
from cli.errors import CliError, ExitCode
from cli.operations import operation_start
from cli.output import Column, print_fields, print_json, print_table, warn, when

COLUMNS = [
    Column("NAME", ("name",), always=True),
    Column("STATE", ("state",)),
    Column("MODEL", ("model",)),
    Column("VERSION", ("model_version",)),
    Column("CLUSTER", ("cluster",)),
    Column("REPLICAS", ("replicas",)),
    Column("GPU", ("gpu_enabled",)),
    Column("OWNER", ("owner",)),
    Column("SCORING URI", ("scoring_uri",)),
]
REVISION_COLUMNS = [
    Column("REVISION", ("number", "revision"), always=True),
    Column("CURRENT", ("current",)),
    Column("MODEL", ("model",)),
    Column("VERSION", ("model_version",)),
    Column("REPLICAS", ("settings.replicas",)),
    Column("GPU", ("settings.gpu_enabled",)),
    Column("BY", ("created_by",)),
    Column("CREATED", ("created_at",), when),
]
# Options that map one to one onto the API's fields.
PLAIN_FIELDS = ("replicas", "cpu_cores", "memory_gb", "gpu_enabled", "gpu_cores", "max_batch_size")
AUTOSCALE_OFF: tuple[()] = ()


def _autoscale(text: str) -> tuple[int, int] | tuple[()]:
    found = autoscale(text)
    return AUTOSCALE_OFF if found is None else found


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise CliError(f"cannot read the {what} {path}: {exc.strerror}", ExitCode.REFUSED) from None


def service_body(args: argparse.Namespace) -> dict[str, Any]:
    """The API fields the options set; what was not given is not sent (the server keeps or defaults it)."""
    body: dict[str, Any] = {}
    if args.model is not None:
        body["model"], version = args.model
        if version is not None:
            body["model_version"] = version
    if getattr(args, "cluster", None) is not None:
        body["cluster"] = args.cluster
    body.update({field: getattr(args, field) for field in PLAIN_FIELDS if getattr(args, field) is not None})
    if args.autoscale is not None:
        body["autoscale_enabled"] = args.autoscale != AUTOSCALE_OFF
        if args.autoscale != AUTOSCALE_OFF:
            body["autoscale_min_replicas"], body["autoscale_max_replicas"] = args.autoscale
    if args.entry_script is not None:
        body["entry_script"] = _read(args.entry_script, "entry script")
    if args.environment is not None:
        body["environment_yaml"] = _read(args.environment, "environment file")
    return body


def _check(method: str, path: str, body: dict[str, Any]) -> int:
    """The page's Check button: the server validates everything and starts nothing."""
    answer = connect().request(method, path, params={"dry_run": "true"}, json=body).json()
    for warning in answer.get("warnings") or []:
        warn(str(warning))
    print(
        "Checked: Lynx would accept this." if answer.get("ok", True) else "Checked: Lynx would refuse this."
    )
    return ExitCode.OK if answer.get("ok", True) else ExitCode.REFUSED


def deploy(args: argparse.Namespace) -> int:
    body = {"name": args.name, **service_body(args)}
    if args.dry_run:
        return _check("POST", "/deployments", body)
    return operation_start(connect(), "POST", "/deployments", body, wait=args.wait)


def deployments_list(args: argparse.Namespace) -> int:
    answer = connect().collect("/deployments", limit=args.limit)
    if args.json:
        print_json(answer)
    else:
        print_table(answer["items"], COLUMNS, empty="No deployments.")
    return ExitCode.OK


def deployments_show(args: argparse.Namespace) -> int:
    deployment = connect().get(f"/deployments/{segment(args.name)}")
    if args.json:
        print_json(deployment)
    else:
        print_fields(deployment, order=("id", "name", "state", "scoring_uri", "model", "model_version"))
    return ExitCode.OK


def deployments_update(args: argparse.Namespace) -> int:
    body = service_body(args)
    if args.canary is not None:
        body["canary_percent"] = args.canary
    if not body:
        raise CliError(
            "nothing to change: give at least one option (lynx deployments update -h)", ExitCode.USAGE
        )
    path = f"/deployments/{segment(args.name)}"
    if args.dry_run:
        return _check("PATCH", path, body)
    return operation_start(connect(), "PATCH", path, body, wait=args.wait)


def deployments_rollback(args: argparse.Namespace) -> int:
    path = f"/deployments/{segment(args.name)}/rollback"
    return operation_start(connect(), "POST", path, {"revision": args.revision}, wait=args.wait)


def deployments_traffic(args: argparse.Namespace) -> int:
    path = f"/deployments/{segment(args.name)}/traffic"
    return operation_start(connect(), "POST", path, {"complete": args.complete}, wait=args.wait)


def deployments_delete(args: argparse.Namespace) -> int:
    return operation_start(connect(), "DELETE", f"/deployments/{segment(args.name)}", wait=args.wait)


def deployments_revisions(args: argparse.Namespace) -> int:
    answer = connect().collect(f"/deployments/{segment(args.name)}/revisions", limit=args.limit)
    if args.json:
        print_json(answer)
    else:
        print_table(answer["items"], REVISION_COLUMNS, empty="No revisions.")
    return ExitCode.OK


def add_service_options(p: argparse.ArgumentParser, *, update: bool) -> None:
    """The deployment's settings: model and cluster required to deploy, everything optional to update."""
    p.add_argument(
        "--model", type=model_ref, required=not update, metavar="MODEL[:VERSION]", help="default: latest"
    )
    if not update:  # a deployment stays on its cluster: moving is another action
        p.add_argument("--cluster", required=True)
    p.add_argument("--replicas", type=positive_int, metavar="N")
    p.add_argument("--cpu", dest="cpu_cores", type=number, metavar="C", help="CPU cores per replica")
    p.add_argument("--memory-gb", dest="memory_gb", type=number, metavar="M", help="memory per replica")
    p.add_argument("--gpu", dest="gpu_enabled", action=argparse.BooleanOptionalAction, help="score on a GPU")
    p.add_argument("--gpu-cores", dest="gpu_cores", type=positive_int, metavar="N")
    p.add_argument("--entry-script", type=Path, metavar="FILE", help="your score.py (default: Lynx's)")
    p.add_argument("--environment", type=Path, metavar="FILE", help="a conda environment .yml")
    p.add_argument(
        "--autoscale", type=_autoscale, metavar="MIN:MAX", help="replicas between MIN and MAX (or off)"
    )
    p.add_argument("--max-batch-size", dest="max_batch_size", type=positive_int, metavar="N")
    p.add_argument("--dry-run", action="store_true", help="only check it, as the page's Check button")
    add_wait_option(p)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("deploy", help="deploy a model as a scoring service (202: an operation)")
    p.add_argument("name", help="the deployment's name")
    add_service_options(p, update=False)
    p.set_defaults(handler=deploy)

    deployments = commands.add_parser("deployments", help="scoring services").add_subparsers(
        dest="action", required=True, metavar="{list,show,update,rollback,traffic,delete,revisions}"
    )
    p = deployments.add_parser("list", help="every deployment: state, scoring URI, replicas, owner")
    add_list_options(p)
    p.set_defaults(handler=deployments_list)

    p = deployments.add_parser("show", help="one deployment, by name or id")
    p.add_argument("name")
    add_json_option(p)
    p.set_defaults(handler=deployments_show)

    p = deployments.add_parser("update", help="change settings: a new revision (202: an operation)")
    p.add_argument("name")
    add_service_options(p, update=True)
    p.add_argument(
        "--canary", type=percent, metavar="PERCENT", help="send PERCENT of traffic to the new revision first"
    )
    p.set_defaults(handler=deployments_update)

    p = deployments.add_parser("rollback", help="back to an earlier revision (202: an operation)")
    p.add_argument("name")
    p.add_argument("revision", type=positive_int)
    add_wait_option(p)
    p.set_defaults(handler=deployments_rollback)

    p = deployments.add_parser("traffic", help="end a canary: all traffic to it, or back (202)")
    p.add_argument("name")
    choice = p.add_mutually_exclusive_group(required=True)
    choice.add_argument("--complete", dest="complete", action="store_true", help="the canary takes it all")
    choice.add_argument("--roll-back", dest="complete", action="store_false", help="the canary is dropped")
    add_wait_option(p)
    p.set_defaults(handler=deployments_traffic)

    p = deployments.add_parser("delete", help="delete a deployment (202: an operation)")
    p.add_argument("name")
    add_wait_option(p)
    p.set_defaults(handler=deployments_delete)

    p = deployments.add_parser("revisions", help="a deployment's revisions")
    p.add_argument("name")
    add_list_options(p)
    p.set_defaults(handler=deployments_revisions)
