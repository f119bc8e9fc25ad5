"""`lynx`: the parser, and the one place errors become `lynx: <message>` and an exit code."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from cli import __version__
from cli.commands import account, activity, clusters, deployments, models, serving
from cli.errors import CliError, ExitCode

EXAMPLES = """\
examples:
  lynx login --url https://lynx.example.com      # asks for a token from your Tokens page
  lynx clusters create local-gpu --target local --wait
  lynx models register digits model.zip --labels labels.txt
  lynx deploy digits-ci --model digits:1 --cluster local-gpu --replicas 2 --gpu --wait
  lynx score digits-ci seven.png
  lynx deployments update digits-ci --model digits:2 --canary 10 --wait
  lynx logs digits-ci --follow
  lynx audit --since 2025-01-01 --action deployment --csv > audit.csv
  lynx deployments list --json | jq -r '.items[].name'

configuration: LYNX_URL and LYNX_TOKEN, else the file `lynx login` writes
  ($XDG_CONFIG_HOME/lynx/config.json, mode 0600); the environment wins.
exit codes: 0 ok; 1 refused (400/404/409) or the operation failed; 2 usage; 3 not signed in or
  token refused (401); 4 the role may not (403); 5 Lynx unreachable (connection, timeout, 5xx);
  6 rate limited (429, after one retry); 130 Ctrl-C while waiting (the operation goes on).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lynx",
        description="Lynx from the command line: clusters, models, deployments, scoring, audit.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lynx {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (account, clusters, models, deployments, serving, activity):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version (0) and usage errors (2): argparse's own
        return exit_.code if isinstance(exit_.code, int) else ExitCode.USAGE
    try:
        return int(args.handler(args))
    except CliError as exc:
        print(f"lynx: {exc.message}", file=sys.stderr)
        return int(exc.code)
    except KeyboardInterrupt:
        print("lynx: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        # `lynx audit | head`: the reader left. Point stdout at /dev/null so the interpreter's final flush
        # does not fail again, and say nothing.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return int(ExitCode.OK)


if __name__ == "__main__":
    sys.exit(main())
