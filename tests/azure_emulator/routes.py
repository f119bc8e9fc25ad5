"""The route table: which handler answers which method and path, on which listener."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import aad, arm, mms, v2
from .http import Request, Response

if TYPE_CHECKING:
    from .emulator import AzureEmulator

Handler = Callable[["AzureEmulator", Request, re.Match[str]], Response]

_WS = arm.WS_SCOPE
_MMS = "/modelmanagement/v1.0" + _WS
_ART = "/artifact/v2.0" + _WS
_RP = "/rp/workspaces" + _WS


@dataclass(frozen=True)
class _Route:
    listener: str  # "tls" | "plain" | "login" | "blob" | "inference"
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    authenticated: bool


def routes() -> list[_Route]:
    table: list[tuple[str, str, str, Handler, bool]] = [
        ("login", "GET", r"/common/discovery/instance", aad.instance_discovery, False),
        (
            "tls",
            "GET",
            r"/(?P<tenant>[^/]+)/v2\.0/\.well-known/openid-configuration",
            aad.openid_configuration,
            False,
        ),
        ("tls", "POST", r"/(?P<tenant>[^/]+)/oauth2/v2\.0/token", aad.token, False),
        ("tls", "GET", r"/subscriptions", arm.subscriptions, True),
        ("tls", "GET", _WS, arm.workspace, True),
        ("tls", "PUT", _WS + r"/computes/(?P<name>[^/]+)", arm.compute_put, True),
        ("tls", "DELETE", _WS + r"/computes/(?P<name>[^/]+)", arm.compute_delete, True),
        # azure-ai-ml reads computes from ARM (azureml-core from the RP below): the same answers.
        ("tls", "GET", _WS + r"/computes", arm.rp_compute_list, True),
        ("tls", "GET", _WS + r"/computes/(?P<name>[^/]+)", arm.rp_compute_get, True),
        (
            "tls",
            "GET",
            r"/subscriptions/[^/]+/providers/Microsoft\.MachineLearningServices/locations/[^/]+"
            r"/computeOperationsStatus/(?P<id>[^/]+)",
            arm.compute_operation,
            True,
        ),
        ("tls", "GET", _RP + r"/computes", arm.rp_compute_list, True),
        ("tls", "GET", _RP + r"/computes/(?P<name>[^/]+)", arm.rp_compute_get, True),
        ("tls", "GET", r"/discovery(?:/.*)?", mms.discovery, False),
        (
            "tls",
            "POST",
            _ART + r"/artifacts/batch/metadata/(?P<origin>[^/]+)/(?P<container>[^/]+)",
            mms.artifacts_batch_metadata,
            True,
        ),
        ("blob", "*", r"/.+", mms.blob, False),
        ("tls", "POST", _MMS + r"/assets", mms.asset_create, True),
        ("tls", "GET", _MMS + r"/assets/(?P<id>[^/]+)", mms.asset_get, True),
        ("tls", "POST", _MMS + r"/models", mms.model_register, True),
        ("tls", "GET", _MMS + r"/models", mms.model_query, True),
        ("tls", "GET", _MMS + r"/models/(?P<id>[^/]+)", mms.model_get, True),
        ("tls", "POST", _MMS + r"/services/validate/name/(?P<name>[^/]+)", mms.validate_name, True),
        ("tls", "POST", _MMS + r"/services/validate/resource", mms.validate_resource, True),
        ("tls", "POST", _MMS + r"/services/validate", mms.validate, True),
        ("tls", "POST", _MMS + r"/services", mms.service_create, True),
        ("tls", "GET", _MMS + r"/services", mms.service_list, True),
        ("tls", "GET", _MMS + r"/services/(?P<name>[^/]+)", mms.service_get, True),
        ("tls", "PATCH", _MMS + r"/services/(?P<name>[^/]+)", mms.service_patch, True),
        ("tls", "DELETE", _MMS + r"/services/(?P<name>[^/]+)", mms.service_delete, True),
        ("tls", "POST", _MMS + r"/services/(?P<name>[^/]+)/listkeys", mms.service_keys, True),
        ("tls", "POST", _MMS + r"/services/(?P<name>[^/]+)/regenerateKeys", mms.service_regen_keys, True),
        ("tls", "POST", _MMS + r"/services/(?P<name>[^/]+)/token", mms.service_token, True),
        ("tls", "GET", _MMS + r"/services/(?P<name>[^/]+)/logs", mms.service_logs, True),
        ("tls", "GET", _MMS + r"/operations/(?P<id>[^/]+)", mms.operation_get, True),
        ("plain", "*", r"/api/v1/service/(?P<name>[^/]+)/score", mms.score, False),
        ("plain", "GET", r"/api/v1/service/(?P<name>[^/]+)/swagger\.json", mms.swagger, False),
    ]
    # Azure ML v2 first: its blob handler answers what the SDK v2 asks of storage and hands the rest to v1's.
    return [
        _Route(lst, method, re.compile(pattern + r"/?\Z", re.IGNORECASE), handler, auth)
        for lst, method, pattern, handler, auth in [*v2.ROUTES, *table]
    ]
