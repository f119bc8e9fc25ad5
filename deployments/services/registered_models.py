"""Registering model versions: files copied under LYNX_MODELS_DIR, laid out as Azure lays them out."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Max

from deployments import model_archives
from deployments.model_archives import ArchiveRefused
from deployments.models import RegisteredModel

from .audit import audit_record
from .operations import Refused


def _tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def model_register(
    *,
    user: User | None,
    name: str,
    source_dir: Path,
    labels: str = "",
    description: str = "",
    signature: dict | None = None,
    framework: str = "TensorFlow",
) -> RegisteredModel:
    """Register the files in `source_dir` as the next version of `name` (as Model.register does).

    The files land in `<models>/<name>/<version>/<name>/`, so the entry script finds them at
    `$AZUREML_MODEL_DIR/<name>`, as on AKS.
    """
    staging = settings.LYNX_MODELS_DIR / ".staging" / uuid.uuid4().hex / name
    staging.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source_dir, staging)
    if labels:
        (staging / "labels.txt").write_text(labels.strip() + "\n")
    size = _tree_size(staging)
    try:
        for _ in range(5):  # two people registering the same name at once: retry on the next version
            version = (RegisteredModel.objects.filter(name=name).aggregate(v=Max("version"))["v"] or 0) + 1
            target = settings.LYNX_MODELS_DIR / name / str(version) / name
            moved = False
            try:
                with transaction.atomic():
                    model = RegisteredModel.objects.create(
                        name=name,
                        version=version,
                        path=f"{name}/{version}/{name}",
                        framework=framework,
                        description=description,
                        labels=labels.strip(),
                        signature=signature or {},
                        size_bytes=size,
                        registered_by=user if user is not None and user.is_authenticated else None,
                    )
                    # We hold this version's row: files already there are an orphan of a
                    # registration whose database write was lost (or a reset database).
                    shutil.rmtree(target.parent, ignore_errors=True)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    staging.rename(target)
                    moved = True
                    audit_record(
                        actor=user,
                        action="model.register",
                        resource=model,
                        after={"name": name, "version": version, "size_bytes": size},
                    )
                return model
            except BaseException as exc:
                if moved:  # the row was rolled back: files without a row must not stay behind
                    shutil.rmtree(target.parent, ignore_errors=True)
                if isinstance(exc, IntegrityError) and not moved:
                    continue
                raise
        raise RuntimeError(f"could not find a free version number for {name}")
    finally:
        shutil.rmtree(staging.parent, ignore_errors=True)


def model_upload(
    *,
    user: User,
    name: str,
    archive: Path,
    archive_name: str = "",
    labels: bytes | None = None,
    description: str = "",
) -> tuple[RegisteredModel, list[str]]:
    """Check an uploaded SavedModel archive and register it as the next version of `name`.

    Returns the new version and notes for the user (e.g. a label count that does not match the model's
    outputs). Raises Refused with the reason when the archive is not a usable SavedModel; then nothing is
    registered and nothing is left on disk.
    """
    display = archive_name or "The upload"
    scratch = settings.LYNX_UPLOADS_DIR / f"unpack-{uuid.uuid4().hex}"
    try:
        label_lines = model_archives.parse_labels(labels) if labels else None
        unpacked = model_archives.unpack_saved_model(archive, scratch / "files", display)
        if label_lines is None:
            label_lines = model_archives.parse_labels(unpacked.labels.encode()) if unpacked.labels else []
        notes = []
        classes = model_archives.output_classes(unpacked.signature)
        if label_lines and classes and len(label_lines) != classes:
            notes.append(
                f"The labels file names {len(label_lines)} classes but the model scores {classes}: "
                "check that it matches the model's outputs."
            )
        model = model_register(
            user=user,
            name=name,
            source_dir=unpacked.saved_model_dir,
            labels="\n".join(label_lines),
            description=description,
            signature=unpacked.signature,
        )
    except ArchiveRefused as exc:
        raise Refused(str(exc)) from None
    finally:
        model_archives.remove_tree(scratch)
    return model, notes


UPLOAD_STALE_HOURS = 6.0  # no upload or unpacking runs this long; LYNX_UPLOAD_STALE_HOURS overrides it


def _leftovers() -> list[Path]:
    """What an upload leaves while it runs: unpacking folders, registration staging, Django's temporary
    upload files (when Django keeps them in a folder of Lynx's, not the system's)."""
    temp = getattr(settings, "FILE_UPLOAD_TEMP_DIR", None)
    temp_dir = Path(temp).resolve() if temp else None
    found = []
    for folder in (settings.LYNX_UPLOADS_DIR, settings.LYNX_MODELS_DIR / ".staging"):
        if folder.is_dir():
            # Django's own folder may live in ours: it is kept (only its stale files go, below).
            found += [p for p in folder.iterdir() if p.resolve() != temp_dir]
    if temp_dir and temp_dir.is_dir():
        found += temp_dir.glob("*.upload*")  # Django names them tmpXXXX.upload<.ext>
    return found


def uploads_sweep(*, older_than_hours: float | None = None) -> int:
    """Remove what killed uploads left behind (a request or worker killed mid-way runs no `finally`):
    unpacking and staging folders and temporary upload files older than `older_than_hours`. Returns how many
    were removed. Registered models are never touched."""
    hours = older_than_hours or float(getattr(settings, "LYNX_UPLOAD_STALE_HOURS", 0) or UPLOAD_STALE_HOURS)
    cutoff = time.time() - hours * 3600
    removed = 0
    for path in _leftovers():
        try:
            if path.lstat().st_mtime >= cutoff:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue  # its own request finished and cleaned up meanwhile
        removed += 1
    return removed
