"""Long actions: the API answers 202 with an operation; `--wait` follows it to the end, line by line."""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from cli.client import Client
from cli.errors import CliError, ExitCode
from cli.output import warn

POLL_SECONDS = 1.0
# A web restart (make run's supervisor, a deploy) is ridden out rather than failing a long wait.
UNREACHABLE_GRACE_SECONDS = 60.0
FINISHED = ("succeeded", "failed")
BAR_WIDTH = 30


def operation_start(
    client: Client,
    method: str,
    path: str,
    body: Any = None,
    *,
    wait: bool,
    headers: Mapping[str, str] | None = None,
) -> int:
    """Ask for a long action; without `wait`, say which operation it is and where, and return 0."""
    response = client.request(method, path, json=body, headers=headers, starts_operation=True)
    answer = response.json() if response.content else {}
    if not isinstance(answer, dict):
        answer = {}
    operation = answer.get("operation", answer)
    for warning in answer.get("warnings") or []:
        warn(str(warning))
    op_id = operation.get("id")
    if op_id is None:
        raise CliError(f"Lynx answered {response.status_code} without an operation id", ExitCode.UNREACHABLE)
    location = response.headers.get("Location") or f"/operations/{op_id}"
    if not wait:
        print(f"operation {op_id} {operation.get('state', 'queued')}: {client.url(location)}")
        return ExitCode.OK
    return operation_wait(client, op_id)


class _Progress:
    """A one-line progress bar (or a spinner, when the operation gives no number) redrawn on a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.spinner = itertools.cycle("|/-\\")
        self.drawn = False

    def draw(self, operation: Mapping[str, Any]) -> None:
        phase = str(operation.get("phase") or operation.get("state") or "")
        progress = operation.get("progress")
        if isinstance(progress, int | float) and not isinstance(progress, bool):
            percent = max(0.0, min(100.0, float(progress)))
            filled = round(BAR_WIDTH * percent / 100)
            line = f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {percent:3.0f}%  {phase}"
        else:
            line = f"{next(self.spinner)} {phase}"
        self.stream.write("\r\x1b[K" + line)
        self.stream.flush()
        self.drawn = True

    def clear(self) -> None:
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.drawn = False


def _line(entry: Any) -> tuple[int | None, str]:
    if isinstance(entry, dict):
        line_id = entry.get("id")
        return (line_id if isinstance(line_id, int) else None), str(entry.get("text", ""))
    return None, str(entry)


def operation_wait(
    client: Client,
    op_id: int | str,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Print each new progress line as it comes; 0 if the operation succeeds, 1 (with its error) if not."""
    out, err = out or sys.stdout, err or sys.stderr
    progress = _Progress(err) if err.isatty() else None
    after = 0
    unreachable_since: float | None = None
    try:
        while True:
            try:
                operation = client.get(f"/operations/{op_id}", {"after_line": after})
                unreachable_since = None
            except CliError as exc:
                if exc.code != ExitCode.UNREACHABLE:
                    raise
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since > UNREACHABLE_GRACE_SECONDS:
                    raise
                sleep(POLL_SECONDS)
                continue
            lines = operation.get("lines") or []
            if progress and lines:
                progress.clear()
            for entry in lines:
                line_id, line = _line(entry)
                out.write(line + "\n")
                after = max(after, line_id or 0)
            out.flush()
            state = operation.get("state")
            # A page of lines may not be the last one: a finished operation is done once no line is new.
            if (state in FINISHED or operation.get("finished") is True) and not lines:
                if progress:
                    progress.clear()
                if state == "failed":
                    reason = operation.get("error") or "no reason given"
                    print(f"lynx: operation {op_id} failed: {reason}", file=err)
                    return ExitCode.REFUSED
                return ExitCode.OK
            if progress:
                progress.draw(operation)
            if not lines:
                sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        if progress:
            progress.clear()
        print(
            f"lynx: stopped waiting; operation {op_id} goes on (lynx operations show {op_id} --wait)",
            file=err,
        )
        return ExitCode.INTERRUPTED
