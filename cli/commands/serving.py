"""A deployment at work: `lynx score`, `lynx keys`, `lynx logs`."""

from __future__ import annotations

import argparse
import mimetypes
import sys
import time
from pathlib import Path
from typing import Any

from cli.arguments import add_json_option, add_wait_option, positive_int, segment
from cli.commands.account import connect
from cli.errors import CliError, ExitCode
from cli.operations import operation_start
from cli.output import Column, print_fields, print_json, print_table

FOLLOW_SECONDS = 2.0
KEY_NAMES = ("primary", "secondary")


def _image_type(path: Path, head: bytes) -> str:
    """The image's own signature first (a .jpg that is a PNG is sent as the PNG it is), else its name."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _score_text(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def score(args: argparse.Namespace) -> int:
    image_path: Path = args.image
    if not image_path.is_file():
        raise CliError(f"{image_path}: no such file", ExitCode.REFUSED)
    client = connect()
    with image_path.open("rb") as image:
        content_type = _image_type(image_path, image.read(16))
        image.seek(0)
        response = client.request(
            "POST",
            f"/deployments/{segment(args.name)}/score",
            params={"image_name": image_path.name},
            data=image,
            headers={"Content-Type": content_type},
        )
    answer = response.json()
    if args.json:
        print_json(answer)
        return ExitCode.OK
    if answer.get("status") == "error":
        # Lynx reached the deployment (or tried to) and recorded the run, but it gave no scores.
        raise CliError(
            f"scoring failed: {answer.get('error') or 'no scores in the answer'}", ExitCode.REFUSED
        )
    classes = answer.get("top_classes") or []
    print_table(
        classes,
        [
            Column("LABEL", ("label",), always=True),
            Column("SCORE", ("score",), _score_text),
        ],
        empty="(no classes in the answer: lynx score --json shows it whole)",
    )
    latency = answer.get("latency_ms")
    if isinstance(latency, int | float):
        print(f"\nlatency {latency:.1f} ms")
    return ExitCode.OK


def _revealed(answer: Any) -> str:
    secret = answer.get("secret") if isinstance(answer, dict) else None
    if not isinstance(secret, str):
        raise CliError("Lynx revealed the key but its answer holds no secret", ExitCode.UNREACHABLE)
    return secret


def keys(args: argparse.Namespace) -> int:
    client = connect()
    base = f"/deployments/{segment(args.name)}/keys"
    if args.regenerate:
        return operation_start(client, "POST", f"{base}/regenerate", {"key": args.regenerate}, wait=args.wait)
    if args.reveal:
        answer = client.send("POST", f"{base}/reveal", {"key": args.reveal})
        if args.json:
            print_json(answer)
        else:
            print(_revealed(answer))  # only the key: `KEY=$(lynx keys d --reveal primary)`
        return ExitCode.OK
    masked = client.get(base)
    if args.json:
        print_json(masked)
    else:
        print_fields(masked, order=KEY_NAMES)
    return ExitCode.OK


def replica_logs(answer: Any) -> dict[str, list[str]]:
    """`{"replicas": {replica: its last lines as text}}` as lines per replica."""
    replicas = answer.get("replicas") if isinstance(answer, dict) else None
    if not isinstance(replicas, dict):
        raise CliError("Lynx answered the logs without a replicas field", ExitCode.UNREACHABLE)
    return {str(name): str(text).splitlines() for name, text in replicas.items()}


def new_lines(seen: list[str], now: list[str]) -> list[str]:
    """The lines of `now` after what `seen` already showed: the tail is a window that slides as the log grows,
    so the overlap is the longest end of `seen` that starts `now`."""
    for overlap in range(min(len(seen), len(now)), 0, -1):
        if seen[-overlap:] == now[:overlap]:
            return now[overlap:]
    return now


def _print_logs(logs: dict[str, list[str]], seen: dict[str, list[str]]) -> None:
    many = len(logs) > 1
    for replica, lines in logs.items():
        for line in new_lines(seen.get(replica, []), lines):
            print(f"[{replica}] {line}" if many and replica else line)
        seen[replica] = lines
    sys.stdout.flush()


def logs(args: argparse.Namespace) -> int:
    client = connect()
    path = f"/deployments/{segment(args.name)}/logs"
    seen: dict[str, list[str]] = {}
    _print_logs(replica_logs(client.get(path, {"lines": args.lines})), seen)
    if not args.follow:
        return ExitCode.OK
    try:
        while True:
            time.sleep(FOLLOW_SECONDS)
            _print_logs(replica_logs(client.get(path, {"lines": args.lines})), seen)
    except KeyboardInterrupt:
        return ExitCode.OK  # Ctrl-C is how one stops following: not an error


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("score", help="send one image to a deployment; print its top classes")
    p.add_argument("name", help="the deployment")
    p.add_argument("image", type=Path, help="a JPEG or PNG")
    add_json_option(p)
    p.set_defaults(handler=score)

    p = commands.add_parser(
        "keys", help="a deployment's keys: masked, revealed (audited), or regenerated (202)"
    )
    p.add_argument("name", help="the deployment")
    action = p.add_mutually_exclusive_group()
    action.add_argument("--reveal", choices=KEY_NAMES, help="print that key in full (audited)")
    action.add_argument("--regenerate", choices=KEY_NAMES, help="replace that key (an operation)")
    add_json_option(p)
    add_wait_option(p)
    p.set_defaults(handler=keys)

    p = commands.add_parser("logs", help="each replica's recent log")
    p.add_argument("name", help="the deployment")
    p.add_argument("--lines", type=positive_int, default=100, metavar="N", help="per replica (default 100)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new lines (Ctrl-C stops)")
    p.set_defaults(handler=logs)
