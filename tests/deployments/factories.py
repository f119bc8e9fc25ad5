"""Small builders for rows tests need, going through the services like a user would."""

from __future__ import annotations

from deployments.environments import default_entry_script, default_environment_yaml
from deployments.models import Cluster
from deployments.services import cluster_create, deployment_create
from deployments.services.transitions import cluster_transition
from deployments.states import ProvisioningState


def ready_cluster(user, name: str = "local-1", gpu_count: float = 0) -> Cluster:
    """A local cluster as its provisioning would leave it (Succeeded), without running a worker."""
    operation = cluster_create(user=user, name=name)
    cluster = operation.cluster
    from deployments.services.operations import operation_transition

    operation_transition(operation=operation, to="running")
    operation_transition(operation=operation, to="succeeded")
    return cluster_transition(cluster=cluster, to=ProvisioningState.SUCCEEDED, gpu_count=gpu_count)


# The smallest entry script the checks accept: init() and run(), nothing else.
MINIMAL_SCRIPT = "def init():\n    pass\n\n\ndef run(data):\n    return data\n"


def deploy_form_data(cluster, model, **overrides) -> dict:
    """What the deploy form posts for a one-replica CPU deployment of `model` on `cluster`."""
    data = {
        "idempotency_key": "k",
        "name": "digits-demo",
        "cluster": cluster.pk,
        "model": model.pk,
        "entry_script": MINIMAL_SCRIPT,
        "environment_yaml": default_environment_yaml(),
        "gpu_cores": 0,
        "replicas": 1,
        "cpu_cores": 1,
        "memory_gb": 1,
        "autoscale_min_replicas": 1,
        "autoscale_max_replicas": 1,
        "autoscale_target_utilization": 70,
    }
    return data | overrides


def start_deployment(user, cluster, model, name: str = "digits-demo", **config):
    return deployment_create(
        user=user,
        name=name,
        cluster=cluster,
        model=model,
        entry_script=default_entry_script(),
        environment_yaml=default_environment_yaml(),
        **config,
    )
