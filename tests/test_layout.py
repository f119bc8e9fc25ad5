"""The layout's promises that import-linter cannot check (it checks the import graph: `make lint`)."""

from __future__ import annotations

import re
from pathlib import Path

from django.conf import settings

from deployments.backends import target_traits

ROOT = Path(__file__).resolve().parents[1]


def test_the_domain_and_the_pages_ask_the_target_instead_of_branching_on_its_name():
    """What differs between targets is declared by each (TargetTraits); only the models name them."""
    # `x.backend == "local"`, `!= 'azureml'`, `in ("local", …)`: any comparison with a target's name.
    branching = re.compile(
        r"\.is_local\b|(Target|Backend(Kind)?)\.(LOCAL|AZUREML)\b"
        r"|[!=]=\s*['\"](local|azureml)['\"]|\bin\s*[(\[{]\s*['\"](local|azureml)['\"]"
    )
    for slipped in ('return poll() * 5 if cluster.backend != "local" else poll()', "if kind == 'azureml':"):
        assert branching.search(slipped), slipped  # the kinds of line this test once missed
    defaults = re.compile(r"default=|^\s*\w+: str = LOCAL_TARGET,$")  # a default branches on nothing
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for package in ("deployments", "dashboard", "workers", "lynx", "accounts")
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.parts and path.name != "models.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if branching.search(line) and not defaults.search(line)
    ]
    assert found == []


def test_every_registered_target_declares_its_traits_and_a_backend():
    for kind, package in settings.LYNX_TARGETS.items():
        traits = target_traits(kind)
        assert traits.poll_factor >= 1, kind
        assert (ROOT / package.replace(".", "/") / "backend.py").is_file(), kind
