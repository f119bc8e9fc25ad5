"""The backend interface (`base.py`) and the registry that finds each target's backend.

settings.LYNX_TARGETS maps a cluster's `backend` value to its target package (`targets/<name>/`), whose
`backend.make_backend(cluster_spec)` returns a `Backend`. The package is imported by name on first use, as
Django finds apps, so the domain never imports a target and a target's SDK loads only where it is used.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from django.conf import settings
from django.utils.module_loading import import_string

from .base import Backend, ClusterSpec, TargetTraits


def _package(kind: str) -> str:
    try:
        return settings.LYNX_TARGETS[kind]
    except KeyError:
        known = sorted(settings.LYNX_TARGETS)
        raise ValueError(f"unknown target {kind!r}: settings.LYNX_TARGETS has {known}") from None


@cache
def backend_factory(kind: str) -> Callable[[ClusterSpec], Backend]:
    return import_string(f"{_package(kind)}.backend.make_backend")


@cache
def target_traits(kind: str) -> TargetTraits:
    """What the target `kind` does its own way (no backend made, no SDK called)."""
    return import_string(f"{_package(kind)}.backend.TRAITS")


def target_choices() -> list[tuple[str, str]]:
    """Cluster.backend's choices: every registered target, with its label."""
    return [(kind, target_traits(kind).label) for kind in settings.LYNX_TARGETS]


def targets_on_this_host() -> list[str]:
    """The targets whose work only the local queue's host can do."""
    return [kind for kind in settings.LYNX_TARGETS if target_traits(kind).on_this_host]


def backend_make(kind: str, cluster: ClusterSpec) -> Backend:
    return backend_factory(kind)(cluster)
