"""Azure AD (Entra ID) as MSAL sees it: instance discovery, OIDC metadata, client-credentials tokens.

Error bodies copy the AADSTS codes and wording Azure AD returns, so Lynx's messages can be
checked against what a user would really read.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import jwt

from .http import Request, Response

if TYPE_CHECKING:
    from .emulator import AzureEmulator

# A fixed HMAC key: the SDK decodes tokens without checking signatures (it reads tid/exp).
_SIGNING_KEY = "lynx-azure-emulator-signing-key-000"


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())


def _aad_error(status: int, error: str, aadsts: int, description: str) -> Response:
    trace = uuid.uuid4()
    return Response(
        status,
        {
            "error": error,
            "error_description": f"AADSTS{aadsts}: {description}\r\nTrace ID: {trace}\r\n"
            f"Correlation ID: {uuid.uuid4()}\r\nTimestamp: {_now()}",
            "error_codes": [aadsts],
            "timestamp": _now(),
            "trace_id": str(trace),
            "correlation_id": str(uuid.uuid4()),
        },
    )


def instance_discovery(emu: AzureEmulator, req: Request, _m: re.Match[str]) -> Response:
    # MSAL asks login.microsoftonline.com whether our authority host is a known one; say yes and
    # send it to our own OIDC document (what AAD does for its sovereign-cloud aliases).
    authorize = req.query.get("authorization_endpoint", "")
    tenant = authorize.split("/")[3] if authorize.count("/") >= 3 else "common"
    return Response(
        200,
        {
            "tenant_discovery_endpoint": f"{emu.base_url}/{tenant}/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [],
        },
    )


def openid_configuration(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    tenant = m["tenant"]
    if tenant not in (emu.tenant_id, "common", "organizations"):
        return _aad_error(
            400,
            "invalid_tenant",
            90002,
            f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing "
            "into the correct cloud. Check with your subscription administrator, this may happen if there "
            "are "
            "no active subscriptions for the tenant.",
        )
    base = f"{emu.base_url}/{tenant}"
    return Response(
        200,
        {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "issuer": f"{emu.base_url}/{emu.tenant_id}/v2.0",
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "tenant_region_scope": "NA",
        },
    )


def token(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    form = {k: v[-1] for k, v in parse_qs(req.body.decode()).items()}
    tenant = m["tenant"]
    client_id = form.get("client_id", "")
    emu.record("aad.token", client_id=client_id, scope=form.get("scope", ""))
    if tenant != emu.tenant_id:
        return _aad_error(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
    if form.get("grant_type") != "client_credentials":
        return _aad_error(
            400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type."
        )
    if client_id != emu.client_id:
        return _aad_error(
            400,
            "unauthorized_client",
            700016,
            f"Application with identifier '{client_id}' was not found in the directory '{emu.tenant_id}'. "
            "This can happen if the application has not been installed by the administrator of the tenant or "
            "consented to by any user in the tenant. You may have sent your authentication request to the "
            "wrong "
            "tenant.",
        )
    if emu.faults.secret_expired:
        return _aad_error(
            401,
            "invalid_client",
            7000222,
            f"The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to "
            f"create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate "
            "credentials for added security: https://aka.ms/certCreds.",
        )
    if form.get("client_secret") != emu.client_secret:
        return _aad_error(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client "
            "secret "
            f"value, not the client secret ID, for a secret added to app '{client_id}'.",
        )
    now = int(time.time())
    access_token = jwt.encode(
        {
            "aud": form.get("scope", "").replace("/.default", ""),
            "iss": f"https://sts.windows.net/{emu.tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "appid": client_id,
            "oid": emu.principal_object_id,
            "sub": emu.principal_object_id,
            "tid": emu.tenant_id,
            "idtyp": "app",
            "ver": "1.0",
        },
        _SIGNING_KEY,
        algorithm="HS256",
    )
    emu.issued_tokens.add(access_token)
    return Response(
        200,
        {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": access_token},
    )
