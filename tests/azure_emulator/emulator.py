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

import datetime as dt
import logging
import os
import re
import shutil
import ssl
import tempfile
import threading
import uuid
from collections import deque
from pathlib import Path
from typing import Any

from . import arm, catalog, v2
from .certs import write_certificates
from .control import ControlAPI
from .http import Listener, Request, Response, server_tls_context
from .routes import _Route, routes
from .simulation import Simulation
from .state import Compute, ExternalAks, Faults, Operation, RegisteredModel, Service, arm_error, iso_now

logger = logging.getLogger("azure_emulator")


class AzureEmulator(Simulation, ControlAPI):
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
        time_scale: float = 1.0,
        cluster_create_seconds: float | None = None,
        service_deploy_seconds: float | None = None,
        delete_seconds: float | None = None,
        port: int = 0,
        plain_port: int = 0,
        workdir: Path | None = None,
    ) -> None:
        """`time_scale` scales Azure's pace (catalog.PACE): 1.0 is Azure's own, 0.001 a thousand times faster.

        An explicit `*_seconds` argument overrides the paced default for that step.
        """
        self.tenant_id, self.client_id, self.client_secret = tenant_id, client_id, client_secret
        self.subscription_id, self.resource_group, self.workspace_name = (
            subscription_id,
            resource_group,
            workspace_name,
        )
        self.location = location
        self.time_scale = time_scale
        self.cluster_create_seconds = (
            self.pace(catalog.azure_seconds("aks_create"))
            if cluster_create_seconds is None
            else cluster_create_seconds
        )
        self.attach_seconds = self.pace(catalog.azure_seconds("aks_attach"))
        self.compute_update_seconds = self.pace(catalog.azure_seconds("compute_update"))
        # A service's image build and rollout together (lifecycle.py splits it as Azure's 240 s and 90 s).
        self.service_deploy_seconds = (
            self.pace(catalog.azure_seconds("image_build") + catalog.azure_seconds("rollout"))
            if service_deploy_seconds is None
            else service_deploy_seconds
        )
        self.delete_seconds = (
            self.pace(catalog.azure_seconds("compute_delete")) if delete_seconds is None else delete_seconds
        )
        self.default_kubernetes_version = catalog.DEFAULT_KUBERNETES_VERSION
        self.today: dt.date | None = None  # None: the real date (retirements are judged against it)
        self.workspace_id = str(uuid.uuid4())  # fresh per run: keeps ~/.azureml/.discovery entries apart
        self.principal_object_id = str(uuid.uuid4())
        self.storage_account = "lynxemulatorstore"
        self.created = iso_now()
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="lynx-azure-emulator-"))
        self.faults = Faults()
        # Scoring: images built per environment digest (build.BuildResult), and the real-time floor under
        # MMS's paced deployment timeout, so that a real inference server has time to start at any time scale.
        self.images: dict[str, Any] = {}
        self.host_start_floor_seconds = 60.0
        self.issued_tokens: set[str] = set()
        self.computes: dict[str, Compute] = {}
        self.external_aks: dict[str, ExternalAks] = {}  # AKS resource id (lower) → the cluster
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
        self.v2 = v2.V2State()  # Azure ML v2: online endpoints, deployments, assets, ARM operations
        self._lock = threading.RLock()
        # The managed-cluster GET is ARM's, not Azure ML's: listed with the compute handlers in arm.py.
        self._routes = routes() + [
            _Route("tls", method, re.compile(pattern + r"/?\Z", re.IGNORECASE), handler, True)
            for method, pattern, handler in arm.EXTRA_ROUTES
        ]
        self._port, self._plain_port = port, plain_port
        self._tls: Listener | None = None
        self._plain: Listener | None = None

    def pace(self, azure_seconds: float) -> float:
        """Seconds the emulator takes for a step that takes Azure `azure_seconds`."""
        return azure_seconds * self.time_scale

    def compute_scoring_base(self, compute_name: str) -> tuple[str, str]:
        """(scheme, host[:port]) of the scoring front end of an AKS compute, for building scoring URIs.

        Without TLS: ("http", "<front end ip>:<port>") — the emulator's plain listener. With TLS ("Auto" or
        "Enabled"): ("https", "<generated fqdn or the user's cname>"), the name the certificate is for.
        """
        compute = self.computes.get(compute_name)
        host = compute.ssl.host if compute is not None else None
        if host:
            return "https", host
        return "http", self.plain_url.removeprefix("http://")

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> AzureEmulator:
        # A cloud definition cached by an earlier run would carry that run's ports.
        shutil.rmtree(self.workdir / "azure-config", ignore_errors=True)
        certs = write_certificates(
            self.workdir / "certs",
            extra_hosts=(
                f"*.{self.location}.cloudapp.azure.com",
                f"*.{self.location}.inference.ml.azure.com",  # managed online endpoints (v2)
            ),
        )
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
        self.stop_hosts(wait=True)
        for listener in (self._tls, self._plain):
            if listener is not None:
                listener.stop()

    def tick(self) -> None:
        super().tick()
        v2.advance(self)

    def stop_hosts(self, wait: bool = False) -> None:
        super().stop_hosts(wait)
        v2.stop_hosts(self, wait)

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

    def workspace_fields(self) -> dict[str, str]:
        """What a user types to connect the emulated workspace: its address and its service principal."""
        return {
            "subscription_id": self.subscription_id,
            "resource_group": self.resource_group,
            "workspace_name": self.workspace_name,
            "tenant_id": self.tenant_id,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
        }

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

    def credential_kwargs(self) -> dict[str, Any]:
        """What azure-identity's `ClientSecretCredential(**…)` needs to sign in here (azure-ai-ml, SDK v2)."""
        return {
            "tenant_id": self.tenant_id,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "authority": self.base_url.removeprefix("https://"),
            "disable_instance_discovery": True,
        }

    def mlclient_kwargs(self) -> dict[str, Any]:
        """What `MLClient(credential, **…)` needs to reach this workspace: azure-ai-ml's own custom-cloud
        options, no patching. The cloud's ports are the emulator's, so one emulator per process."""
        return {
            "subscription_id": self.subscription_id,
            "resource_group_name": self.resource_group,
            "workspace_name": self.workspace_name,
            "cloud": "LynxEmulator",
            "cloud_metadata": {
                "azure_portal": "https://portal.azure.com/",
                "resource_manager": f"{self.base_url}/",
                "active_directory": f"{self.base_url}/",
                "aml_resource_id": "https://ml.azure.com/",
                "storage_endpoint": "core.windows.net",
                "registry_discovery_endpoint": f"{self.base_url}/",
            },
            "enable_telemetry": False,
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
        if req.host.endswith(".inference.ml.azure.com"):
            return "inference"  # managed online endpoints' data plane (v2), TLS through the CONNECT proxy
        if (
            req.scheme == "https"
            and req.path.startswith("/api/v1/service/")
            and self._is_scoring_host(req.host)
        ):
            return "plain"  # azureml-fe with TLS: the same scoring routes, reached through the CONNECT proxy
        return "tls" if req.scheme == "https" else kind

    def _is_scoring_host(self, host: str) -> bool:
        """A compute's TLS name: Azure's generated `*.cloudapp.azure.com`, or a user certificate's cname."""
        if host.endswith(".cloudapp.azure.com"):
            return True
        return any((getattr(c, "ssl", None) and c.ssl.host) == host for c in self.computes.values())

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
