"""Registered models: every version, one model's versions, one version, and registering an uploaded
SavedModel with the model page's checks (streamed to disk, cut off at the size limit)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import wraps
from pathlib import Path
from typing import Any

from django.core.files.uploadedfile import UploadedFile as DjangoUploadedFile
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest, HttpResponseBase
from django.urls import reverse
from django.utils.datastructures import MultiValueDict
from ninja import File, Form, Query, Router, Schema
from ninja.decorators import decorate_view
from ninja.files import UploadedFile

from api.auth import require_deployer
from api.errors import InvalidInput, NotFound
from api.pagination import PageQuery, page
from api.schemas import REFUSALS
from deployments.forms import ModelUploadForm
from deployments.model_archives import LABELS_MAX_BYTES, human_size, upload_max_bytes
from deployments.models import Deployment, RegisteredModel
from deployments.services import Refused
from deployments.services.registered_models import model_upload
from deployments.states import ServiceState
from deployments.views.uploads import LimitedUploadHandler

router = Router()


class ModelVersionOut(Schema):
    id: int
    name: str
    version: int
    framework: str
    description: str
    labels: list[str]  # class names, one per output
    size_bytes: int
    registered_by: str | None
    created_at: datetime
    deployments: list[str]  # the live deployments that serve this version
    url: str  # its page


class ModelVersionDetail(ModelVersionOut):
    signature: dict  # the SavedModel's signatures (inputs and outputs of serving_default, …)


class ModelVersionPage(Schema):
    items: list[ModelVersionOut]
    next_cursor: str | None


class ModelOut(Schema):
    name: str
    latest_version: int
    versions: list[ModelVersionOut]  # newest first


class ModelRegistered(Schema):
    model: ModelVersionDetail
    warnings: list[str] = []  # e.g. a labels file that names more classes than the model scores


def _versions() -> QuerySet[RegisteredModel]:
    alive = (
        Deployment.objects.exclude(state=ServiceState.DELETED).only("pk", "name", "model_id").order_by("name")
    )
    return RegisteredModel.objects.select_related("registered_by").prefetch_related(
        Prefetch("deployments", queryset=alive.order_by("name"), to_attr="live_deployments")
    )


def _version(model: RegisteredModel) -> dict[str, Any]:
    return {
        "id": model.pk,
        "name": model.name,
        "version": model.version,
        "framework": model.framework,
        "description": model.description,
        "labels": [line for line in model.labels.splitlines() if line.strip()],
        "size_bytes": model.size_bytes,
        "registered_by": model.registered_by.get_username() if model.registered_by is not None else None,
        "created_at": model.created_at,
        "deployments": [d.name for d in getattr(model, "live_deployments", [])],
        "url": reverse("model_detail", kwargs={"pk": model.pk}),
        "signature": model.signature or {},
    }


@router.get("", response={200: ModelVersionPage, **REFUSALS}, summary="Every model version, oldest first")
def model_list(request: HttpRequest, query: Query[PageQuery]) -> dict:
    return page(_versions(), query, _version)


@router.get("/{name}", response={200: ModelOut, **REFUSALS}, summary="A model's versions, newest first")
def model_get(request: HttpRequest, name: str) -> dict:
    versions = [_version(m) for m in _versions().filter(name=name).order_by("-version")]
    if not versions:
        raise NotFound(f"No model named {name}.")
    return {"name": name, "latest_version": versions[0]["version"], "versions": versions}


@router.get(
    "/{name}/versions/{int:version}",
    response={200: ModelVersionDetail, **REFUSALS},
    summary="One version of a model, with its signature",
)
def model_version_get(request: HttpRequest, name: str, version: int) -> dict:
    found = _versions().filter(name=name, version=version).first()
    if found is None:
        raise NotFound(f"No version {version} of a model named {name}.")
    return _version(found)


# --- registering -------------------------------------------------------------------------------------

_HANDLER = "lynx_upload_handler"


def _streamed_uploads(run: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """The model page's upload handling (deployments/views/uploads.py): each file streamed to a temporary
    file and cut off at its limit. Installed around the whole operation, because ninja reads request.FILES
    for the File parameters (and a session's CSRF check reads request.POST) before the view body runs.
    The page's `streamed_uploads` decorator is not used as is: its CSRF check would refuse token requests,
    which carry no CSRF cookie; ninja checks CSRF for session requests itself. Someone who may not register
    a model is refused by authentication, before anything of the body is read (api/auth.py)."""

    @wraps(run)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        handler = LimitedUploadHandler(request, upload_max_bytes(), {"labels": LABELS_MAX_BYTES})
        request.upload_handlers = [handler]
        setattr(request, _HANDLER, handler)
        return run(request, *args, **kwargs)

    return wrapped


def _too_large(request: HttpRequest, field: str) -> bool:
    handler = getattr(request, _HANDLER, None)
    return handler is not None and field in handler.too_large


@router.post(
    "",
    response={201: ModelRegistered, **REFUSALS},
    summary="Register a SavedModel (.zip or .tar.gz) as the next version of `name` (multipart)",
)
@decorate_view(_streamed_uploads)
def model_new(
    request: HttpRequest,
    name: Form[str],
    archive: File[UploadedFile],
    labels: File[UploadedFile | None] = None,
    description: Form[str] = "",
) -> tuple[int, dict]:
    user = require_deployer(request)
    if _too_large(request, "archive"):
        limit = human_size(upload_max_bytes())
        raise InvalidInput({"archive": [f"The archive is over the {limit} upload limit; nothing was kept."]})
    files: MultiValueDict[str, DjangoUploadedFile] = MultiValueDict({"archive": [archive]})
    if labels is not None:
        files["labels"] = labels
    form = ModelUploadForm({"name": name, "description": description}, files)
    if not form.is_valid():
        raise InvalidInput.from_form(form)
    uploaded = form.cleaned_data["archive"]
    label_file = form.cleaned_data.get("labels")
    try:
        model, notes = model_upload(
            user=user,
            name=form.cleaned_data["name"],
            archive=Path(uploaded.temporary_file_path()),
            archive_name=uploaded.name,
            labels=label_file.read(LABELS_MAX_BYTES + 1) if label_file else None,
            description=form.cleaned_data["description"],
        )
    except Refused as exc:
        # The page shows why on the archive field: the upload is bad input, not a state conflict.
        raise InvalidInput({"archive": [str(exc)]}) from None
    return 201, {"model": _version(_versions().get(pk=model.pk)), "warnings": notes}
