"""`lynx models list|show|register`."""

from __future__ import annotations

import argparse
import mimetypes
from contextlib import ExitStack
from pathlib import Path

from cli.arguments import add_json_option, add_list_options, segment
from cli.commands.account import connect
from cli.errors import CliError, ExitCode
from cli.multipart import MultipartBody
from cli.output import Column, count, print_fields, print_json, print_table, size, warn, when

COLUMNS = [
    Column("NAME", ("name",), always=True),
    Column("VERSION", ("version",), always=True),
    Column("FRAMEWORK", ("framework",)),
    Column("CLASSES", ("labels",), count),
    Column("SIZE", ("size_bytes",), size),
    Column("BY", ("registered_by",)),
    Column("REGISTERED", ("created_at",), when),
    Column("SERVED BY", ("deployments",)),
    Column("DESCRIPTION", ("description",)),
]


def models_list(args: argparse.Namespace) -> int:
    answer = connect().collect("/models", limit=args.limit)
    if args.json:
        print_json(answer)
    else:
        print_table(answer["items"], COLUMNS, empty="No models.")
    return ExitCode.OK


def models_show(args: argparse.Namespace) -> int:
    model = connect().get(f"/models/{segment(args.name)}")
    if args.json:
        print_json(model)
        return ExitCode.OK
    print_fields(model, skip=("versions",))
    versions = model.get("versions") or []
    if versions:
        print()
        print_table(versions, [c for c in COLUMNS if c.header != "NAME"])
    return ExitCode.OK


def _archive_type(path: Path) -> str:
    if path.name.endswith((".tar.gz", ".tgz")):
        return "application/gzip"
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def models_register(args: argparse.Namespace) -> int:
    archive_path: Path = args.archive
    labels_path: Path | None = args.labels
    for path in (archive_path, labels_path):
        if path is not None and not path.is_file():
            raise CliError(f"{path}: no such file", ExitCode.REFUSED)
    client = connect()
    body = MultipartBody()
    body.add_field("name", args.name)
    if args.description is not None:
        body.add_field("description", args.description)
    with ExitStack() as files:
        # The archive is read block by block while it is sent, never whole (it may be gigabytes).
        archive = files.enter_context(archive_path.open("rb"))
        body.add_file("archive", archive, archive_path.name, _archive_type(archive_path))
        if labels_path is not None:
            labels = files.enter_context(labels_path.open("rb"))
            body.add_file("labels", labels, labels_path.name, "text/plain")
        response = client.request("POST", "/models", data=body, headers={"Content-Type": body.content_type})
    answer = response.json()
    if args.json:
        print_json(answer)
        return ExitCode.OK
    for warning in answer.get("warnings") or []:
        warn(str(warning))
    model = answer.get("model", answer)
    version = model.get("version")
    print(f"Registered {model.get('name', args.name)}" + (f" version {version}" if version else ""))
    return ExitCode.OK


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = commands.add_parser("models", help="registered models").add_subparsers(
        dest="action", required=True, metavar="{list,show,register}"
    )
    p = models.add_parser("list", help="every registered model")
    add_list_options(p)
    p.set_defaults(handler=models_list)

    p = models.add_parser("show", help="one model, every version")
    p.add_argument("name")
    add_json_option(p)
    p.set_defaults(handler=models_show)

    p = models.add_parser(
        "register", help="upload a SavedModel archive (.zip or .tar.gz): a new model or a new version"
    )
    p.add_argument("name")
    p.add_argument("archive", type=Path, help="a .zip or .tar.gz holding a TensorFlow SavedModel")
    p.add_argument("--labels", type=Path, metavar="FILE", help="class names, one a line")
    p.add_argument("--description", metavar="TEXT")
    add_json_option(p)
    p.set_defaults(handler=models_register)
