"""Turn rows into the plain specs backends take, and pick the backend for a cluster."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from django.conf import settings

from deployments.backends import backend_make
from deployments.backends.base import Backend, ClusterSpec, ServiceSpec, WorkspaceSpec
from deployments.crypto import decrypt
from deployments.models import Cluster, Deployment, Workspace


def workspace_spec(workspace: Workspace) -> WorkspaceSpec:
    return WorkspaceSpec(
        subscription_id=workspace.subscription_id,
        resource_group=workspace.resource_group,
        workspace_name=workspace.workspace_name,
        tenant_id=workspace.tenant_id,
        client_id=workspace.client_id,
        client_secret=decrypt(workspace.client_secret_encrypted),
    )


def cluster_spec(cluster: Cluster) -> ClusterSpec:
    return ClusterSpec(
        name=cluster.name,
        vm_size=cluster.vm_size,
        node_count=cluster.node_count,
        cluster_purpose=cluster.cluster_purpose,
        location=cluster.location,
        attach_resource_id=cluster.attach_resource_id,
        workspace=workspace_spec(cluster.workspace) if cluster.workspace is not None else None,
        tls_mode=cluster.tls_mode,
        tls_leaf_domain_label=cluster.tls_leaf_domain_label,
        tls_cname=cluster.tls_cname,
        tls_certificate=cluster.tls_certificate,
        tls_key=decrypt(cluster.tls_key_encrypted),
        internal_load_balancer=cluster.internal_load_balancer,
    )


def _content_path(deployment: Deployment, filename: str, text: str) -> Path:
    """Where a deployment's entry script or environment lives for its replicas: content-addressed, so a
    rolling update gets a new file while old replicas keep theirs."""
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return settings.VAR_DIR / "scripts" / f"{deployment.pk}-{digest}" / filename


def _write_once(path: Path, text: str) -> None:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)


def service_files_write(deployment: Deployment) -> None:
    """Write the files a ServiceSpec points at: score.py with scoring/batching.py beside it (on Azure the
    source directory is all a replica has, so the default script's `from batching import Batcher` must find
    it there) and environment.yml. Called right before the backend starts replicas; idempotent."""
    entry = _content_path(deployment, "score.py", deployment.entry_script)
    _write_once(entry, deployment.entry_script)
    helper = entry.with_name("batching.py")
    if not helper.exists():
        shutil.copyfile(settings.BASE_DIR / "scoring" / "batching.py", helper)
    environment = _content_path(deployment, "environment.yml", deployment.environment_yaml)
    _write_once(environment, deployment.environment_yaml)


def service_spec(deployment: Deployment) -> ServiceSpec:
    """The deployment as the backend takes it. Reads only: the files it names are written by
    service_files_write, before replicas start."""
    return ServiceSpec(
        name=deployment.name,
        cluster=cluster_spec(deployment.cluster),
        model_name=deployment.model.name,
        model_version=deployment.model.version,
        model_path=deployment.model.files_dir,
        entry_script=_content_path(deployment, "score.py", deployment.entry_script),
        environment_yaml=deployment.environment_yaml,
        gpu_enabled=deployment.gpu_enabled,
        gpu_cores=deployment.gpu_cores,
        replicas=deployment.replicas,
        cpu_cores=deployment.cpu_cores,
        memory_gb=deployment.memory_gb,
        autoscale_enabled=deployment.autoscale_enabled,
        autoscale_min_replicas=deployment.autoscale_min_replicas,
        autoscale_max_replicas=deployment.autoscale_max_replicas,
        autoscale_target_utilization=deployment.autoscale_target_utilization,
        primary_key=decrypt(deployment.primary_key_encrypted),
        secondary_key=decrypt(deployment.secondary_key_encrypted),
        max_batch_size=deployment.max_batch_size,
        max_batch_wait_ms=deployment.max_batch_wait_ms,
        lynx_id=deployment.pk,
        revision=deployment.revision,
        port=deployment.local_port or 0,
        token_auth_enabled=deployment.token_auth_enabled,
    )


def backend_for(cluster: Cluster) -> Backend:
    """The backend that talks to this cluster's target (settings.LYNX_TARGETS)."""
    return backend_make(cluster.backend, cluster_spec(cluster))
