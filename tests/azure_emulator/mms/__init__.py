"""The regional data plane: discovery, artifacts + blob storage, assets, models (MMS), services, scoring.

The handlers live by API: `artifacts` (discovery, the artifact service and blob storage), `models`
(assets and registered models), `services` (validation and the web service lifecycle), `operations`
(their long-running operations) and `scoring` (the services' scoring and swagger URIs).
"""

from __future__ import annotations

from .artifacts import artifacts_batch_metadata, blob, discovery
from .models import asset_create, asset_get, model_get, model_json, model_query, model_register
from .operations import operation_get
from .scoring import score, swagger
from .services import (
    service_create,
    service_delete,
    service_get,
    service_json,
    service_keys,
    service_list,
    service_logs,
    service_patch,
    service_regen_keys,
    service_token,
    validate,
    validate_name,
    validate_resource,
)

__all__ = [
    "artifacts_batch_metadata",
    "asset_create",
    "asset_get",
    "blob",
    "discovery",
    "model_get",
    "model_json",
    "model_query",
    "model_register",
    "operation_get",
    "score",
    "service_create",
    "service_delete",
    "service_get",
    "service_json",
    "service_keys",
    "service_list",
    "service_logs",
    "service_patch",
    "service_regen_keys",
    "service_token",
    "swagger",
    "validate",
    "validate_name",
    "validate_resource",
]
