"""`AzureEmulator`: a local stand-in for the slice of Azure that azureml-core 1.61 talks to for AKS.

The real SDK is pointed at it through the SDK's own configuration (see `AzureEmulator.env`):

* `ARM_CLOUD_METADATA_URL` → a cloud definition named "AzureCloud" whose ARM and login endpoints
  are this emulator (read once, when azureml is first imported, and cached in AZURE_CONFIG_DIR);
* the workspace's `discoveryUrl` (and `AZUREML_DISCOVERY_SERVICE_ENDPOINT`) → the regional data plane;
* `REQUESTS_CA_BUNDLE` → trusts the emulator's throwaway CA (MSAL only accepts https authorities);
* `HTTPS_PROXY` (with `NO_PROXY=127.0.0.1,localhost`) → an intercepting proxy for the two hosts no
  setting can redirect: MSAL's instance discovery at login.microsoftonline.com and blob storage
  (`{account}.blob.core.windows.net`, rebuilt by the vendored storage client from the SAS URL).

ServicePrincipalAuthentication therefore runs for real: MSAL discovers the tenant, posts the client
secret, and every later request carries the bearer token the emulator issued.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import ssl
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import aad, arm, mms
from .certs import write_certificates
from .http import Listener, Request, Response, server_tls_context
from .state import Compute, Faults, Injection, Operation, RegisteredModel, Service, arm_error, iso_now

logger = logging.getLogger("azure_emulator")

Handler = Callable[["AzureEmulator", Request, re.Match[str]], Response]
Scorer = Callable[[str, bytes], tuple[int, Any]]

_WS = arm.WS_SCOPE
_MMS = "/modelmanagement/v1.0" + _WS
_ART = "/artifact/v2.0" + _WS
_RP = "/rp/workspaces" + _WS


@dataclass(frozen=True)
class _Route:
    listener: str  # "tls" | "plain" | "login" | "blob"
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    authenticated: bool


def _routes() -> list[_Route]:
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
        ("tls", "GET", _MMS + r"/services/(?P<name>[^/]+)/logs", mms.service_logs, True),
        ("tls", "GET", _MMS + r"/operations/(?P<id>[^/]+)", mms.operation_get, True),
        ("plain", "*", r"/api/v1/service/(?P<name>[^/]+)/score", mms.score, False),
        ("plain", "GET", r"/api/v1/service/(?P<name>[^/]+)/swagger\.json", mms.swagger, False),
    ]
    return [
        _Route(lst, method, re.compile(pattern + r"/?\Z", re.IGNORECASE), handler, auth)
        for lst, method, pattern, handler, auth in table
    ]


def default_scorer(service_name: str, body: bytes) -> tuple[int, Any]:
    """Deterministic stand-in for a model: one score (the row mean) per input row."""
    try:
        data = json.loads(body or b"{}").get("data")
        rows = data if isinstance(data, list) and data and isinstance(data[0], list) else [data or []]
        return 200, {
            "scores": [sum(map(float, row)) / len(row) if row else 0.0 for row in rows],
            "service": service_name,
        }
    except (ValueError, TypeError, AttributeError) as exc:
        return 400, {"message": f"Bad input: {exc}"}


class AzureEmulator:
    """Start with `start()` (or as a context manager); apply `env()` before azureml is imported."""

    def __init__(
        self,
        *,
        tenant_id: str = "72f988bf-86f1-41af-91ab-2d7cd011db47",
        client_id: str = "11111111-2222-3333-4444-555555555555",
        client_secret: str = "lynx-emulator-secret",
        subscription_id: str = "00000000-1111-2222-3333-444444444444",
        resource_group: str = "lynx-rg",
        workspace_name: str = "lynx-ws",
        location: str = "eastus",
        cluster_create_seconds: float = 1.0,
        service_deploy_seconds: float = 1.0,
        delete_seconds: float = 0.5,
        port: int = 0,
        plain_port: int = 0,
        workdir: Path | None = None,
    ) -> None:
        self.tenant_id, self.client_id, self.client_secret = tenant_id, client_id, client_secret
        self.subscription_id, self.resource_group, self.workspace_name = (
            subscription_id,
            resource_group,
            workspace_name,
        )
        self.location = location
        self.cluster_create_seconds = cluster_create_seconds
        self.service_deploy_seconds = service_deploy_seconds
        self.delete_seconds = delete_seconds
        self.workspace_id = str(uuid.uuid4())  # fresh per run: keeps ~/.azureml/.discovery entries apart
        self.principal_object_id = str(uuid.uuid4())
        self.storage_account = "lynxemulatorstore"
        self.created = iso_now()
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="lynx-azure-emulator-"))
        self.faults = Faults()
        self.scorer: Scorer = default_scorer
        self.issued_tokens: set[str] = set()
        self.computes: dict[str, Compute] = {}
        self.external_aks: dict[str, tuple[str, int]] = {}  # AKS resource id (lower) → (vm_size, node count)
        self.models: list[RegisteredModel] = []
        self.assets: dict[str, dict[str, Any]] = {}
        self.artifacts: dict[str, str] = {}
        self.blobs: dict[str, bytes] = {}
        self.blob_blocks: dict[str, dict[str, bytes]] = {}
        self.services: dict[str, Service] = {}
        self.operations: dict[str, Operation] = {}
        # (method, host, path, status), bounded so a long-running dev emulator does not grow forever
        self.requests: deque[tuple[str, str, str, int]] = deque(maxlen=50_000)
        self.unknown_requests: list[str] = []
        self.events: deque[tuple[str, dict[str, Any]]] = deque(maxlen=50_000)
        self._lock = threading.RLock()
        self._routes = _routes()
        self._port, self._plain_port = port, plain_port
        self._tls: Listener | None = None
        self._plain: Listener | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> AzureEmulator:
        # A cloud definition cached by an earlier run would carry that run's ports.
        shutil.rmtree(self.workdir / "azure-config", ignore_errors=True)
        certs = write_certificates(self.workdir / "certs")
        self.ca_cert = certs.ca_cert
        context = server_tls_context(str(certs.server_cert), str(certs.server_key))
        self._tls = Listener(lambda r: self._dispatch("tls", r), port=self._port, tls=context)
        self._plain = Listener(
            lambda r: self._dispatch("plain", r), port=self._plain_port, tunnel_tls=context
        )
        self._tls.start()
        self._plain.start()
        self.ca_bundle = self.workdir / "ca-bundle.pem"
        system = Path(os.environ.get("REQUESTS_CA_BUNDLE") or ssl.get_default_verify_paths().cafile or "")
        extra = system.read_text() if system.is_file() else ""
        self.ca_bundle.write_text(extra + "\n" + certs.ca_cert.read_text())
        logger.info("Azure emulator on %s (plain %s)", self.base_url, self.plain_url)
        return self

    def stop(self) -> None:
        for listener in (self._tls, self._plain):
            if listener is not None:
                listener.stop()

    def __enter__(self) -> AzureEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- addresses -----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._tls is not None, "start() the emulator first"
        return f"https://127.0.0.1:{self._tls.port}"

    @property
    def plain_url(self) -> str:
        assert self._plain is not None, "start() the emulator first"
        return f"http://127.0.0.1:{self._plain.port}"

    @property
    def discovery_url(self) -> str:
        return f"{self.base_url}/discovery"

    @property
    def workspace_scope(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{self.workspace_name}"
        )

    def mms_base(self, req: Request | None = None) -> str:
        return f"{self.base_url}/modelmanagement/v1.0{self.workspace_scope}"

    def compute_operation_url(self, op_id: str) -> str:
        return (
            f"{self.base_url}/subscriptions/{self.subscription_id}/providers/Microsoft.MachineLearningServices"
            f"/locations/{self.location}/computeOperationsStatus/{op_id}?api-version=2020-02-02"
        )

    def scoring_uri(self, service_name: str) -> str:
        return f"{self.plain_url}/api/v1/service/{service_name}/score"

    def env(self) -> dict[str, str]:
        """Environment for a process that will import azureml (set it before the first import)."""
        proxy = self.plain_url
        return {
            "ARM_CLOUD_METADATA_URL": f"{self.plain_url}/metadata/endpoints?api-version=2019-05-01",
            "AZUREML_DISCOVERY_SERVICE_ENDPOINT": self.discovery_url,
            # The SDK caches the cloud definition (ports included) in AZURE_CONFIG_DIR/cloudEndpoints.json.
            "AZURE_CONFIG_DIR": str(self.workdir / "azure-config"),
            "REQUESTS_CA_BUNDLE": str(self.ca_bundle),
            "HTTPS_PROXY": proxy,
            "https_proxy": proxy,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "AZUREML_LOG_DEPRECATION_WARNING_ENABLED": "False",
        }

    def cloud_metadata(self) -> list[dict[str, Any]]:
        # Named "AzureCloud" so the SDK's default cloud (and ServicePrincipalAuthentication's
        # cloud='AzureCloud') resolve to it without any code change.
        return [
            {
                "name": "AzureCloud",
                "portal": "https://portal.azure.com",
                "authentication": {
                    "loginEndpoint": f"{self.base_url}/",
                    "audiences": ["https://management.core.windows.net/", "https://management.azure.com/"],
                    "tenant": "common",
                    "identityProvider": "AAD",
                },
                "media": "https://rest.media.azure.net",
                "graphAudience": "https://graph.windows.net/",
                "graph": "https://graph.windows.net/",
                "suffixes": {
                    "azureDataLakeStoreFileSystem": "azuredatalakestore.net",
                    "acrLoginServer": "azurecr.io",
                    "sqlServerHostname": "database.windows.net",
                    "azureDataLakeAnalyticsCatalogAndJob": "azuredatalakeanalytics.net",
                    "keyVaultDns": "vault.azure.net",
                    "storage": "core.windows.net",
                    "azureFrontDoorEndpointSuffix": "azurefd.net",
                },
                "batch": "https://batch.core.windows.net/",
                "resourceManager": f"{self.base_url}/",
                "vmImageAliasDoc": "https://raw.githubusercontent.com/Azure/azure-rest-api-specs/master/arm-compute/"
                "quickstart-templates/aliases.json",
                "activeDirectoryDataLake": "https://datalake.azure.net/",
                "sqlManagement": "https://management.core.windows.net:8443/",
                "gallery": "https://gallery.azure.com/",
            }
        ]

    # --- request handling ----------------------------------------------------------------------

    def _listener_for(self, kind: str, req: Request) -> str:
        if req.host == "login.microsoftonline.com":
            return "login"
        if req.host.endswith(".blob.core.windows.net"):
            return "blob"
        return "tls" if req.scheme == "https" else kind

    def _dispatch(self, kind: str, req: Request) -> Response:
        with self._lock:
            self.tick()
            response = self._route(self._listener_for(kind, req), req)
            self.requests.append((req.method, req.host, req.path, response.status))
            logger.debug("%s %s%s -> %s", req.method, req.host, req.path, response.status)
            return response

    def _route(self, listener: str, req: Request) -> Response:
        if listener == "plain" and req.path.startswith("/_emulator/"):
            return self._control(req)
        if listener == "plain" and req.path == "/metadata/endpoints":
            return Response(200, self.cloud_metadata())
        injection = self.faults.take_injection(req.method, req.path)
        if injection is not None:
            logger.info("injected %s for %s %s", injection.status, req.method, req.path)
            return Response(injection.status, injection.body, headers=dict(injection.headers))
        for route in self._routes:
            if route.listener != listener or route.method not in ("*", req.method):
                continue
            match = route.pattern.match(req.path)
            if match is None:
                continue
            if route.authenticated and req.bearer not in self.issued_tokens:
                return arm_error(
                    401,
                    "InvalidAuthenticationToken",
                    "The access token is invalid or was not issued by this tenant.",
                )
            return route.handler(self, req, match)
        message = f"UNEMULATED AZURE REQUEST: {req.method} {req.scheme}://{req.host}{req.path} {req.query}"
        logger.error(message)
        self.unknown_requests.append(message)
        return Response(501, {"error": {"code": "NotEmulated", "message": message}})

    def tick(self) -> None:
        """Move every resource whose transition deadline has passed to its next state."""
        now = time.monotonic()
        for name, compute in list(self.computes.items()):
            if compute.deadline > now:
                continue
            if compute.provisioning_state in ("Creating", "Updating"):
                if compute.fail_with is not None:
                    compute.provisioning_state, compute.errors = "Failed", [{"error": compute.fail_with}]
                else:
                    compute.provisioning_state = "Succeeded"
                compute.modified_on = iso_now()
            elif compute.provisioning_state == "Deleting":
                del self.computes[name]
        for name, svc in list(self.services.items()):
            if svc.deadline > now:
                continue
            if svc.deleting:
                del self.services[name]
            elif svc.state == "Transitioning":
                svc.state, svc.error = svc.outcome, svc.outcome_error
                svc.updated_time = iso_now()
                svc.log_lines.extend(self.ready_log(svc))
        for op in self.operations.values():
            if op.state != "Running" or op.deadline > now:
                continue
            if op.kind == "compute":
                compute = self.computes.get(op.target)
                if compute is None or compute.provisioning_state == "Succeeded":
                    op.state = "Succeeded"  # created, or gone after a delete
                elif compute.provisioning_state == "Failed":
                    op.state, op.error = "Failed", compute.errors[0]["error"]
            elif op.kind == "service":
                svc = self.services.get(op.target)
                if svc is None or svc.state == "Healthy":
                    op.state = "Succeeded"
                elif svc.state in ("Unschedulable", "Failed", "Unhealthy"):
                    op.state, op.error = "Failed", svc.error
            else:
                op.state = "Succeeded"

    def new_operation(self, kind: str, target: str, seconds: float, operation_type: str = "") -> Operation:
        op = Operation(
            id=str(uuid.uuid4()),
            kind=kind,
            target=target,
            deadline=time.monotonic() + seconds,
            operation_type=operation_type,
        )
        self.operations[op.id] = op
        return op

    def record(self, event: str, **details: Any) -> None:
        self.events.append((event, details))

    # --- helpers used by handlers --------------------------------------------------------------

    @staticmethod
    def vcpus(vm_size: str) -> int:
        from deployments.vm_sizes import vm_size_info

        info = vm_size_info(vm_size)
        return info.vcpus if info else 4

    @staticmethod
    def gpus_per_node(vm_size: str) -> float:
        from deployments.vm_sizes import vm_size_info

        info = vm_size_info(vm_size)
        return info.gpu_count if info else 0

    def boot_log(self, svc: Service) -> list[str]:
        env = (svc.payload.get("environmentImageRequest") or {}).get("environment") or {}
        image = (
            (env.get("docker") or {}).get("baseImage")
        ) or "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04"
        return [
            f"{iso_now()} | Pulling image built from {image}",
            f"{iso_now()} | Creating pods for service {svc.name} on compute {svc.payload.get('computeName')}",
        ]

    def ready_log(self, svc: Service) -> list[str]:
        if svc.state != "Healthy":
            return [f"{iso_now()} | Pod scheduling failed: {json.dumps(svc.error)}"]
        gpu = (svc.payload.get("containerResourceRequirements") or {}).get("gpu") or 0
        environment = (svc.payload.get("environmentImageRequest") or {}).get("environment") or {}
        entry_script = (environment.get("environmentVariables") or {}).get("AZUREML_ENTRY_SCRIPT")
        return [
            f"{iso_now()} | Azure ML Inferencing HTTP server v1.5.1",
            f"{iso_now()} | Server Settings --- Entry Script Name: {entry_script}",
            f"{iso_now()} | Booting worker with pid: 42 (GPUs visible: {gpu})",
            f"{iso_now()} | Users's init has completed successfully",
            f"{iso_now()} | Scoring timeout is set to {svc.payload.get('scoringTimeoutMs') or 60000}",
        ]

    # --- test and control API ------------------------------------------------------------------

    def fail_cluster_create_with_quota(
        self, name: str = "*", family: str = "standardNCASv3_T4 Family Cores"
    ) -> None:
        with self.faults.lock:
            self.faults.quota[name] = family

    def fail_cluster_provisioning(
        self,
        name: str = "*",
        code: str = "ClusterCreationFailed",
        message: str = "AKS cluster creation failed.",
    ) -> None:
        with self.faults.lock:
            self.faults.cluster_failures[name] = {"code": code, "message": message}

    def make_deployment_unschedulable(
        self, name: str = "*", message: str = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    ) -> None:
        with self.faults.lock:
            self.faults.unschedulable[name] = message

    def inject(
        self,
        method: str,
        path_regex: str,
        status: int,
        body: Any = None,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next `times` matching requests with `status`/`body` instead of handling them."""
        if body is None:
            body = {
                "error": {
                    "code": {
                        409: "Conflict",
                        429: "TooManyRequests",
                        500: "InternalServerError",
                        503: "ServiceUnavailable",
                    }.get(status, "Error"),
                    "message": f"Injected HTTP {status} from the Lynx Azure emulator.",
                }
            }
        with self.faults.lock:
            self.faults.injections.append(
                Injection(method.upper(), re.compile(path_regex), status, body, times, headers or {})
            )

    def expire_client_secret(self, expired: bool = True) -> None:
        self.faults.secret_expired = expired

    def deny_access(self, denied: bool = True) -> None:
        self.faults.deny_access = denied

    def create_cluster_directly(
        self,
        name: str,
        vm_size: str = "Standard_NC4as_T4_v3",
        agent_count: int = 1,
        cluster_purpose: str = "DevTest",
        state: str = "Succeeded",
    ) -> None:
        """Someone created a cluster in the portal, behind Lynx's back."""
        with self._lock:
            compute = Compute(
                name=name,
                location=self.location,
                vm_size=vm_size,
                agent_count=agent_count,
                cluster_purpose=cluster_purpose,
                is_attached=False,
                created_on=iso_now(),
                resource_id=f"/subscriptions/{self.subscription_id}/resourcegroups/{self.resource_group}"
                f"/providers/Microsoft.ContainerService/managedClusters/{name}",
            )
            compute.provisioning_state = state
            self.computes[name] = compute

    def register_external_aks(self, resource_id: str, vm_size: str, agent_count: int) -> None:
        """An AKS cluster that exists in the subscription, so that it can be attached."""
        self.external_aks[resource_id.lower()] = (vm_size, agent_count)

    def count(self, method: str, path_regex: str) -> int:
        pattern = re.compile(path_regex)
        return sum(1 for m, _h, p, _s in self.requests if m == method and pattern.search(p))

    def reset(self) -> None:
        with self._lock:
            self.faults.clear()
            for table in (
                self.computes,
                self.services,
                self.operations,
                self.assets,
                self.artifacts,
                self.blobs,
            ):
                table.clear()
            self.models.clear()
            self.requests.clear()
            self.unknown_requests.clear()

    def _control(self, req: Request) -> Response:
        """POST /_emulator/<action> with a JSON body: the same knobs as the Python methods."""
        action = req.path.removeprefix("/_emulator/").strip("/")
        body = req.json() if req.body else {}
        actions: dict[str, Callable[..., Any]] = {
            "quota": self.fail_cluster_create_with_quota,
            "cluster-failure": self.fail_cluster_provisioning,
            "unschedulable": self.make_deployment_unschedulable,
            "inject": self.inject,
            "expire-secret": self.expire_client_secret,
            "deny-access": self.deny_access,
            "cluster": self.create_cluster_directly,
            "external-aks": self.register_external_aks,
            "reset": self.reset,
        }
        if action == "state" and req.method == "GET":
            return Response(
                200,
                {
                    "computes": {n: c.provisioning_state for n, c in self.computes.items()},
                    "services": {n: s.state for n, s in self.services.items()},
                    "models": [m.id for m in self.models],
                    "unknown_requests": self.unknown_requests,
                },
            )
        if req.method != "POST" or action not in actions:
            return Response(
                404, {"message": f"unknown control action {action!r}", "actions": sorted(actions)}
            )
        try:
            actions[action](**body)
        except TypeError as exc:
            return Response(400, {"message": str(exc)})
        return Response(200, {"ok": True})
