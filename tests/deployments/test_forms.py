import pytest

from deployments.forms import ClusterForm, DeploymentForm
from tests.deployments.factories import deploy_form_data, ready_cluster

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "name, message",
    [
        ("a", "3 to 24 letters"),
        ("x" * 25, "at most 24"),
        ("bad_name", "3 to 24 letters"),
        ("1gpu", "starting with a letter"),
        ("local", "reserves"),
    ],
)
def test_cluster_names_that_break_azures_rules_are_refused(name, message):
    form = ClusterForm({"idempotency_key": "k", "name": name})
    assert not form.is_valid()
    assert message in str(form.errors["name"])


@pytest.mark.parametrize(
    "overrides, field, message",
    [
        ({"name": "Digits"}, "name", "lowercase"),
        ({"name": "9digits"}, "name", "starting with a letter"),
        ({"name": "ab"}, "name", "3 to 32"),
        ({"replicas": 0}, "replicas", "greater than or equal to 1"),
        ({"replicas": 99}, "replicas", "less than or equal to 16"),
        ({"cpu_cores": 0}, "cpu_cores", "greater than or equal to 0.1"),
        ({"memory_gb": 1000}, "memory_gb", "less than or equal to 512"),
        ({"gpu_cores": 2}, "gpu_cores", "needs the GPU switched on"),
        ({"gpu_enabled": "on", "gpu_cores": 1}, "gpu_enabled", "has no GPU"),
        ({"entry_script": "def init(:\n"}, "entry_script", "score.py line 1"),
    ],
)
def test_bad_deployment_input_gets_a_clear_message(deployer, demo_model, overrides, field, message):
    cluster = ready_cluster(deployer)
    form = DeploymentForm(deploy_form_data(cluster, demo_model, **overrides))
    assert not form.is_valid()
    assert message in str(form.errors[field])


def test_autoscale_minimum_above_maximum_is_refused(deployer, demo_model):
    cluster = ready_cluster(deployer)
    form = DeploymentForm(
        deploy_form_data(
            cluster, demo_model, autoscale_enabled="on", autoscale_min_replicas=5, autoscale_max_replicas=2
        )
    )
    assert not form.is_valid()
    assert "Autoscale minimum (5) is above the maximum (2)" in str(form.errors["autoscale_min_replicas"])


def test_a_valid_deployment_form_passes(deployer, demo_model):
    cluster = ready_cluster(deployer)
    form = DeploymentForm(deploy_form_data(cluster, demo_model))
    assert form.is_valid(), form.errors
