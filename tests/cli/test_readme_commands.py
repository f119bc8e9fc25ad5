"""The README's and docs/API.md's `lynx` examples are commands the CLI accepts, as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]


def documented_commands() -> list[str]:
    found = []
    for doc in ("README.md", "docs/API.md"):
        for block in re.findall(r"```(?:sh|yaml|)\n(.*?)```", (ROOT / doc).read_text(), re.S):
            for line in block.splitlines():
                command = line.split("#")[0].strip().removeprefix("- run: ").strip()
                if command.startswith("lynx ") and "[" not in command and "|" not in command:
                    found.append(command.split(">")[0].strip())
    return found


def test_the_docs_show_the_whole_lifecycle():
    verbs = {" ".join(shlex.split(command)[1:3]) for command in documented_commands()}
    assert {"clusters create", "deployments delete", "clusters delete"} <= verbs
    assert any(command.startswith("lynx deploy ") for command in documented_commands())
    assert any(command.startswith("lynx score ") for command in documented_commands())


@pytest.mark.parametrize("command", documented_commands())
def test_each_documented_command_parses(command):
    words = [word.replace("${GITHUB_RUN_ID}", "1") for word in shlex.split(command)[1:]]
    build_parser().parse_args(words)  # argparse exits (SystemExit) on anything it does not accept
