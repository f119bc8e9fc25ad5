"""The Azure emulator knows Azure's compute rules from its own tables, and refuses what Azure refuses.

Every rule is exercised through the real azureml-core SDK (ComputeTarget / AksCompute), which crosses HTTP
to the emulator; the scheduler is checked on its own at the end.
"""

from __future__ import annotations

import ast
import datetime as dt
import re
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from tests.azure_emulator import AzureEmulator, catalog, scheduler
from tests.azure_emulator.state import Compute, Service
from tests.conftest import wait_for
from tests.targets.azureml.tls_material import valid_pair

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # the SDK's vendored ruamel

EMULATOR_DIR = Path(__file__).resolve().parents[2] / "azure_emulator"
LYNX_PACKAGES = {"deployments", "targets", "scoring", "dashboard", "lynx", "workers"}
# Task B's scoring host runs the deployed score.py under Lynx's own replica runtime, so it alone may
# import `scoring`; nothing else in the emulator may see Lynx.
ALLOWED_LYNX_IMPORTS = {"hosts.py": {"scoring"}}
T4, A100 = "Standard_NC4as_T4_v3", "Standard_NC24ads_A100_v4"
SETTLED = ("Succeeded", "Failed", "Canceled")


def name(prefix: str = "c") -> str:
    # Ends with a letter: Azure refuses a compute name ending in a hyphen and digits only (gpu-1).
    return f"{prefix}-{uuid.uuid4().hex[:7]}z"


@pytest.fixture(scope="module")
def ws(azure_emulator_session: AzureEmulator) -> Any:
    """The emulated workspace, connected as the how-to connects: a service principal."""
    from azureml.core import Workspace
    from azureml.core.authentication import ServicePrincipalAuthentication

    fields = azure_emulator_session.workspace_fields()
    auth = ServicePrincipalAuthentication(
        tenant_id=fields["tenant_id"],
        service_principal_id=fields["client_id"],
        service_principal_password=fields["client_secret"],
    )
    return Workspace(fields["subscription_id"], fields["resource_group"], fields["workspace_name"], auth=auth)


def create(ws: Any, compute_name: str, **config: Any) -> Any:
    from azureml.core.compute import AksCompute, ComputeTarget

    return ComputeTarget.create(ws, compute_name, AksCompute.provisioning_configuration(**config))


def refusal(call: Any) -> str:
    """The SDK's exception text (it carries Azure's status code and error body)."""
    from azureml.exceptions import ComputeTargetException

    with pytest.raises(ComputeTargetException) as err:
        call()
    return re.sub(r"""\\+(['"])""", r"\1", str(err.value))  # the body is quoted inside a bytes repr


def settled(target: Any, timeout: float = 10) -> str:
    """Poll the compute through the SDK until its provisioning state is terminal."""
    return wait_for(
        lambda: target.get_status() in SETTLED and target.provisioning_state,
        timeout=timeout,
        interval=0.05,
        message=f"{target.name} to settle",
    )


def arm_get(emu: AzureEmulator, ws: Any, path: str) -> requests.Response:
    headers = ws._auth.get_authentication_header()
    return requests.get(
        f"{emu.base_url}{path}", params={"api-version": "2024-02-01"}, headers=headers, timeout=10
    )


# --- VM sizes -----------------------------------------------------------------------------------------


def test_the_retired_nc6_is_refused_as_no_longer_available(ws, azure_emulator) -> None:
    compute_name = name()

    text = refusal(
        lambda: create(ws, compute_name, vm_size="Standard_NC6", agent_count=1, cluster_purpose="DevTest")
    )

    assert "Response Code: 400" in text and "VMSizeNotSupported" in text
    assert "retired on 2023-09-06" in text and "no longer available and can't be provisioned" in text
    assert compute_name not in azure_emulator.computes


def test_ncv3_and_an_invented_size_are_refused(ws, azure_emulator) -> None:
    retired = refusal(
        lambda: create(ws, name(), vm_size="Standard_NC6s_v3", agent_count=1, cluster_purpose="DevTest")
    )
    invented = refusal(
        lambda: create(ws, name(), vm_size="Standard_NC8ads_A10_v9", agent_count=1, cluster_purpose="DevTest")
    )

    assert "retired on 2025-09-30" in retired
    assert "Virtual Machine size: 'Standard_NC8ads_A10_v9' is not supported for subscription" in invented
    assert "standard_nc4as_t4_v3" in invented  # Azure lists what is available


def test_nvv3_is_deployable_until_its_retirement_date_only(ws, azure_emulator) -> None:
    azure_emulator.today = dt.date(2026, 9, 30)
    after = refusal(
        lambda: create(ws, name(), vm_size="Standard_NV12s_v3", agent_count=1, cluster_purpose="DevTest")
    )
    azure_emulator.today = dt.date(2026, 9, 29)
    before = create(ws, name(), vm_size="Standard_NV12s_v3", agent_count=1, cluster_purpose="DevTest")

    assert "retired on 2026-09-30" in after
    assert before.name in azure_emulator.computes


def test_a_current_t4_devtest_cluster_of_one_node_is_accepted(ws, azure_emulator) -> None:
    target = create(ws, name("t4"), vm_size=T4, agent_count=1, cluster_purpose="DevTest")

    assert settled(target) == "Succeeded"
    assert (target.agent_vm_size, target.agent_count, target.cluster_purpose) == (T4, 1, "DevTest")


def test_dv2_sizes_are_announced_for_retirement_but_still_deployable(ws, azure_emulator) -> None:
    target = create(ws, name("d3"))  # the SDK's defaults: FastProd, 3 × Standard_D3_v2 = 12 vCPUs

    assert settled(target) == "Succeeded"
    assert (target.agent_vm_size, target.agent_count) == ("Standard_D3_v2", 3)
    assert catalog.vm_size("Standard_D3_v2").retirement_announced_for == dt.date(2028, 5, 1)


# --- cluster purpose ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vm_size", "nodes"),
    [(A100, 1), ("Standard_D8s_v5", 2), ("Standard_D4s_v5", 1)],
    ids=["24-vcpus-on-1-node", "16-vcpus-on-2-nodes", "4-vcpus"],
)
def test_fast_prod_needs_three_nodes_and_twelve_vcpus(ws, azure_emulator, vm_size, nodes) -> None:
    compute_name = name()

    text = refusal(
        lambda: create(ws, compute_name, vm_size=vm_size, agent_count=nodes, cluster_purpose="FastProd")
    )

    assert "Response Code: 400" in text and "must be greater than or equal to 12" in text
    assert "at least 3 nodes" in text and "specify 'DevTest'" in text
    assert compute_name not in azure_emulator.computes


def test_fast_prod_on_three_four_vcpu_nodes_is_accepted(ws, azure_emulator) -> None:
    target = create(ws, name(), vm_size="Standard_D4s_v5", agent_count=3, cluster_purpose="FastProd")

    assert target.name in azure_emulator.computes and settled(target) == "Succeeded"


# --- names ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["ab", "-gpu", "1gpu", "gpu-", "gpu_1", "a" * 25, "gpu-1", "cpu-cluster-1"])
def test_compute_names_outside_azures_rule_are_refused(ws, azure_emulator, bad) -> None:
    text = refusal(lambda: create(ws, bad, vm_size=T4, agent_count=1, cluster_purpose="DevTest"))

    assert "Response Code: 400" in text
    assert (
        "It must start with a letter, end with a letter or digit, and be between 3 and 24 characters" in text
    )
    assert bad not in azure_emulator.computes
    if re.search(r"-[0-9]+$", bad):
        assert "Numbers cannot be the ending of the name if the previous character is a minus" in text


def test_a_24_character_name_is_accepted(ws, azure_emulator) -> None:
    long_name = ("gpu-" + uuid.uuid4().hex)[:23] + "z"

    target = create(ws, long_name, vm_size=T4, agent_count=1, cluster_purpose="DevTest")

    assert len(long_name) == 24 and target.name in azure_emulator.computes


def test_a_name_taken_by_a_compute_of_another_type_is_refused(ws, azure_emulator) -> None:
    taken = name("train")
    azure_emulator.create_cluster_directly(taken, vm_size="Standard_D4s_v5", compute_type="AmlCompute")

    text = refusal(lambda: create(ws, taken, vm_size=T4, agent_count=1, cluster_purpose="DevTest"))

    assert "Response Code: 409" in text and "Compute with this name already exists" in text
    assert azure_emulator.computes[taken].compute_type == "AmlCompute"


# --- TLS through AksCompute.update, at create and at attach ---------------------------------------------


def test_update_with_a_leaf_domain_goes_updating_then_succeeded_and_serves_https(ws, azure_emulator) -> None:
    from azureml.core.compute.aks import AksUpdateConfiguration, SslConfiguration

    azure_emulator.compute_update_seconds = 1.5
    target = create(ws, name("tls"), vm_size=T4, agent_count=1, cluster_purpose="DevTest")
    assert settled(target) == "Succeeded"
    assert azure_emulator.compute_scoring_base(target.name)[0] == "http"

    target.update(AksUpdateConfiguration(SslConfiguration(leaf_domain_label="contoso")))

    assert target.get_status() == "Updating"
    assert settled(target) == "Succeeded"
    ssl = target.ssl_configuration
    fqdn = ssl.cname
    assert (ssl.status, ssl.leaf_domain_label) == ("Auto", "contoso")
    assert fqdn.startswith("contoso") and fqdn.endswith(".eastus.cloudapp.azure.com")
    assert len(fqdn.split(".")[0]) == len("contoso") + 3
    assert azure_emulator.compute_scoring_base(target.name) == ("https", fqdn)


def test_renewing_a_leaf_domain_certificate_is_an_update_that_keeps_the_name(ws, azure_emulator) -> None:
    from azureml.core.compute.aks import AksUpdateConfiguration, SslConfiguration

    target = create(ws, name("renew"), vm_size=T4, agent_count=1, cluster_purpose="DevTest")
    settled(target)
    target.update(AksUpdateConfiguration(SslConfiguration(leaf_domain_label="renewme")))
    settled(target)
    fqdn = target.ssl_configuration.cname

    target.update(AksUpdateConfiguration(SslConfiguration(renew=True)))

    assert settled(target) == "Succeeded"
    assert target.ssl_configuration.cname == fqdn
    assert azure_emulator.computes[target.name].ssl.renewals == 1


def test_renew_without_a_leaf_domain_is_refused(ws, azure_emulator) -> None:
    from azureml.core.compute.aks import AksUpdateConfiguration, SslConfiguration

    target = create(ws, name("norenew"), vm_size=T4, agent_count=1, cluster_purpose="DevTest")
    settled(target)

    text = refusal(lambda: target.update(AksUpdateConfiguration(SslConfiguration(renew=True))))

    assert "the cluster should have the leaf domain label set for SSL" in text
    assert azure_emulator.computes[target.name].provisioning_state == "Succeeded"


def test_disabling_tls_returns_the_front_end_to_http(ws, azure_emulator) -> None:
    from azureml.core.compute.aks import AksUpdateConfiguration, SslConfiguration

    target = create(ws, name("off"), vm_size=T4, agent_count=1, cluster_purpose="DevTest")
    settled(target)
    target.update(AksUpdateConfiguration(SslConfiguration(leaf_domain_label="offagain")))
    settled(target)

    target.update(AksUpdateConfiguration(SslConfiguration(status="Disabled")))

    assert settled(target) == "Succeeded" and target.ssl_configuration.status == "Disabled"
    assert azure_emulator.compute_scoring_base(target.name) == (
        "http",
        azure_emulator.plain_url.removeprefix("http://"),
    )


def test_an_own_certificate_given_at_create_is_served_under_its_cname(ws, azure_emulator, tmp_path) -> None:
    from azureml.core.compute import AksCompute, ComputeTarget

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_pem, key_pem = valid_pair("scoring.contoso.com")
    cert.write_text(cert_pem)
    key.write_text(key_pem)
    config = AksCompute.provisioning_configuration(vm_size=T4, agent_count=1, cluster_purpose="DevTest")
    config.enable_ssl(ssl_cname="scoring.contoso.com", ssl_cert_pem_file=str(cert), ssl_key_pem_file=str(key))

    target = ComputeTarget.create(ws, name("own"), config)

    assert settled(target) == "Succeeded"
    assert (target.ssl_configuration.status, target.ssl_configuration.cname) == (
        "Enabled",
        "scoring.contoso.com",
    )
    assert target.ssl_configuration.key is None  # Azure never reads a private key back
    assert azure_emulator.compute_scoring_base(target.name) == ("https", "scoring.contoso.com")


@pytest.mark.parametrize(
    ("cert_pem", "key_pem", "why"),
    [
        (
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            valid_pair()[1],
            "SSL certificate could not be parsed",
        ),
        (valid_pair()[0], "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n", "SSL key could"),
        (valid_pair()[0], valid_pair()[1], "does not match the SSL certificate"),
    ],
    ids=["garbage-certificate", "garbage-key", "key-of-another-certificate"],
)
def test_an_own_certificate_azure_cannot_use_is_refused_with_400(
    ws, azure_emulator, tmp_path, cert_pem, key_pem, why
) -> None:
    from azureml.core.compute import AksCompute, ComputeTarget

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text(cert_pem)
    key.write_text(key_pem)
    config = AksCompute.provisioning_configuration(vm_size=T4, agent_count=1, cluster_purpose="DevTest")
    config.enable_ssl(ssl_cname="scoring.contoso.com", ssl_cert_pem_file=str(cert), ssl_key_pem_file=str(key))
    compute_name = name("bad")

    message = refusal(lambda: ComputeTarget.create(ws, compute_name, config))

    assert "400" in message and "BadRequest" in message and why in message
    assert compute_name not in azure_emulator.computes


def test_an_attached_cluster_keeps_its_kubernetes_version_and_takes_a_leaf_domain(ws, azure_emulator) -> None:
    from azureml.core.compute import AksCompute, ComputeTarget

    resource_id = (
        f"/subscriptions/{azure_emulator.subscription_id}/resourceGroups/aks-rg/providers/"
        f"Microsoft.ContainerService/managedClusters/{name('team')}"
    )
    azure_emulator.register_external_aks(resource_id, "Standard_NC8as_T4_v3", 2, kubernetes_version="1.31.9")
    config = AksCompute.attach_configuration(resource_id=resource_id, cluster_purpose="DevTest")
    config.enable_ssl(leaf_domain_label="team")

    target = ComputeTarget.attach(ws, name("att"), config)

    assert settled(target) == "Succeeded"
    assert target.ssl_configuration.status == "Auto" and target.ssl_configuration.cname.startswith("team")
    assert azure_emulator.computes[target.name].kubernetes_version == "1.31.9"
    aks = arm_get(azure_emulator, ws, resource_id).json()
    assert aks["properties"]["kubernetesVersion"] == "1.31.9"
    assert aks["properties"]["networkProfile"]["loadBalancerSku"] == "standard"


def test_attaching_a_small_cluster_as_fast_prod_is_refused(ws, azure_emulator) -> None:
    from azureml.core.compute import AksCompute, ComputeTarget

    resource_id = (
        f"/subscriptions/{azure_emulator.subscription_id}/resourceGroups/aks-rg/providers/"
        f"Microsoft.ContainerService/managedClusters/{name('small')}"
    )
    azure_emulator.register_external_aks(resource_id, "Standard_NC8as_T4_v3", 2)
    config = AksCompute.attach_configuration(resource_id=resource_id)  # FastProd by default

    text = refusal(lambda: ComputeTarget.attach(ws, name("att"), config))

    assert "Response Code: 400" in text and "at least 3 nodes" in text


# --- the AKS resource on ARM ------------------------------------------------------------------------------


def test_a_created_clusters_resource_id_resolves_to_an_aks_cluster_with_a_version(ws, azure_emulator) -> None:
    target = create(ws, name("ver"), vm_size=T4, agent_count=2, cluster_purpose="DevTest")
    settled(target)

    response = arm_get(azure_emulator, ws, target.cluster_resource_id)

    assert response.status_code == 200
    aks = response.json()["properties"]
    assert (
        aks["kubernetesVersion"]
        == aks["currentKubernetesVersion"]
        == azure_emulator.default_kubernetes_version
    )
    assert (aks["agentPoolProfiles"][0]["vmSize"], aks["agentPoolProfiles"][0]["count"]) == (T4, 2)


def test_an_unknown_aks_cluster_is_not_found(ws, azure_emulator) -> None:
    path = (
        f"/subscriptions/{azure_emulator.subscription_id}/resourceGroups/aks-rg/providers/"
        "Microsoft.ContainerService/managedClusters/nowhere"
    )

    response = arm_get(azure_emulator, ws, path)

    assert response.status_code == 404 and response.json()["error"]["code"] == "ResourceNotFound"


# --- a real workspace's mix of compute types -------------------------------------------------------------


def test_a_workspace_with_other_compute_types_lists_through_the_sdk(ws, azure_emulator) -> None:
    from azureml.core.compute import AmlCompute, ComputeInstance, ComputeTarget, KubernetesCompute

    names = {kind: name(kind[:4].lower()) for kind in ("AmlCompute", "ComputeInstance", "Kubernetes")}
    for kind, compute_name in names.items():
        azure_emulator.create_cluster_directly(compute_name, vm_size="Standard_D4s_v5", compute_type=kind)
    bare = name("bare")
    # A cluster whose provisioning failed: the RP has no properties to describe (the SDK reads them only
    # for Succeeded/Updating clusters).
    azure_emulator.create_cluster_directly(
        bare, compute_type="AmlCompute", state="Failed", properties_null=True
    )

    listed = {target.name: target for target in ComputeTarget.list(ws)}

    assert isinstance(listed[names["AmlCompute"]], AmlCompute)
    assert listed[names["AmlCompute"]].vm_size == "Standard_D4s_v5"
    assert isinstance(listed[names["ComputeInstance"]], ComputeInstance)
    assert isinstance(listed[names["Kubernetes"]], KubernetesCompute)
    assert listed[names["Kubernetes"]].namespace == "default"
    assert listed[bare].vm_size is None  # properties.properties: null
    raw = {
        c["name"]: c
        for c in arm_get(
            azure_emulator, ws, f"/rp/workspaces{azure_emulator.workspace_scope}/computes"
        ).json()["value"]
    }
    instance = raw[names["ComputeInstance"]]["properties"]
    assert (
        instance["properties"]["vmSize"] == "Standard_D4s_v5" and "agentCount" not in instance["properties"]
    )
    assert instance["resourceId"] is None and instance["provisioningErrors"] is None


# --- Canceled ------------------------------------------------------------------------------------------


def test_a_create_canceled_in_azure_ends_canceled(ws, azure_emulator) -> None:
    compute_name = name("cancel")
    azure_emulator.cancel_cluster_create(compute_name)

    target = create(ws, compute_name, vm_size=T4, agent_count=1, cluster_purpose="DevTest")

    assert settled(target) == "Canceled"
    state, error = target._get_operation_state()
    assert (state, error["code"]) == ("Canceled", "OperationCanceled")


def test_deleting_a_compute_still_creating_cancels_its_creation(ws, azure_emulator) -> None:
    azure_emulator.cluster_create_seconds = 30
    target = create(ws, name("early"), vm_size=T4, agent_count=1, cluster_purpose="DevTest")
    create_operation = target._operation_endpoint

    target.delete()

    target._operation_endpoint = create_operation
    assert target._get_operation_state()[0] == "Canceled"
    wait_for(
        lambda: azure_emulator.tick() or target.name not in azure_emulator.computes, timeout=5, interval=0.05
    )


# --- Azure's pace -------------------------------------------------------------------------------------------


def test_the_emulators_clock_is_azures_pace_scaled(tmp_path) -> None:
    emu = AzureEmulator(time_scale=0.001, workdir=tmp_path)

    assert emu.cluster_create_seconds == pytest.approx(0.6)  # AKS creation: ~10 minutes on Azure
    assert emu.delete_seconds == pytest.approx(catalog.azure_seconds("compute_delete") * 0.001)
    assert emu.pace(catalog.azure_seconds("mms_deployment_timeout")) == pytest.approx(1.2)
    assert AzureEmulator(workdir=tmp_path).cluster_create_seconds == 600
    assert all(step.source for step in catalog.PACE.values())


# --- the emulator's independence from Lynx ---------------------------------------------------------------


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module",
            "__import__",
        ):
            found.update(arg.value.split(".")[0] for arg in node.args if isinstance(arg, ast.Constant))
    return found


def test_no_emulator_module_imports_lynx() -> None:
    modules = sorted(EMULATOR_DIR.rglob("*.py"))
    assert len(modules) > 10

    leaks = {
        str(path.relative_to(EMULATOR_DIR)): sorted(
            (imported_packages(path) & LYNX_PACKAGES) - ALLOWED_LYNX_IMPORTS.get(path.name, set())
        )
        for path in modules
    }

    assert {module: found for module, found in leaks.items() if found} == {}


# --- the scheduler ----------------------------------------------------------------------------------------


def cluster(vm_size: str, nodes: int, *services: Service) -> SimpleNamespace:
    compute = Compute("aks", "eastus", vm_size, nodes, "DevTest", False, None, "")
    return SimpleNamespace(computes={"aks": compute}, services={s.name: s for s in services})


def service(service_name: str, cpu: float = 1, memory: float = 1, gpu: int = 0, replicas: int = 1) -> Service:
    return Service(
        service_name, payload(service_name, cpu, memory, gpu, replicas), "", "k1", "k2", state="Healthy"
    )


def payload(service_name: str, cpu: float = 1, memory: float = 1, gpu: int = 0, replicas: int = 1) -> dict:
    return {
        "name": service_name,
        "computeName": "aks",
        "numReplicas": replicas,
        "containerResourceRequirements": {"cpu": cpu, "memoryInGB": memory, "gpu": gpu},
    }


def test_eight_cpus_do_not_fit_on_one_four_vcpu_node() -> None:
    reason = scheduler.unschedulable_reason(cluster("Standard_D4s_v5", 1), "aks", payload("big", cpu=8))

    assert reason is not None and reason.startswith("0/1 nodes are available: 1 Insufficient cpu.")


def test_a_pod_within_a_nodes_allocatable_cpu_fits() -> None:
    assert (
        scheduler.unschedulable_reason(cluster("Standard_D4s_v5", 1), "aks", payload("ok", cpu=3.5)) is None
    )
    # 4 vCPUs less AKS's 0.14-core reservation: a full 4-core request does not fit
    assert (
        scheduler.unschedulable_reason(cluster("Standard_D4s_v5", 1), "aks", payload("full", cpu=4))
        is not None
    )


def test_two_services_that_fit_alone_do_not_fit_together() -> None:
    first = service("first", cpu=2, replicas=3)
    emu = cluster("Standard_D4s_v5", 3, first)

    alone = scheduler.unschedulable_reason(
        cluster("Standard_D4s_v5", 3), "aks", payload("second", cpu=2, replicas=3)
    )
    together = scheduler.unschedulable_reason(emu, "aks", payload("second", cpu=2, replicas=3))

    assert alone is None
    assert together is not None and together.startswith("0/3 nodes are available: 3 Insufficient cpu.")


def test_an_updated_services_old_pods_do_not_count() -> None:
    current = service("web", cpu=3)
    emu = cluster("Standard_D4s_v5", 1, current)

    assert scheduler.unschedulable_reason(emu, "aks", payload("web", cpu=3.5), replacing="web") is None
    assert scheduler.unschedulable_reason(emu, "aks", payload("other", cpu=1)) is not None


def test_memory_and_gpus_are_scheduled_too() -> None:
    memory = scheduler.unschedulable_reason(cluster("Standard_D4s_v5", 2), "aks", payload("m", memory=15))
    gpus = scheduler.unschedulable_reason(cluster(T4, 2), "aks", payload("g", gpu=2))
    partition = scheduler.unschedulable_reason(
        cluster("Standard_NV6ads_A10_v5", 1), "aks", payload("p", gpu=1)
    )

    assert memory is not None and memory.startswith("0/2 nodes are available: 2 Insufficient memory.")
    assert gpus is not None and gpus.startswith("0/2 nodes are available: 2 Insufficient nvidia.com/gpu.")
    assert partition is None  # an A10 partition is advertised as one nvidia.com/gpu


def test_autoscaled_services_are_placed_at_their_minimum_replicas() -> None:
    autoscaled = payload("auto", cpu=3)
    autoscaled.pop("numReplicas")
    autoscaled["autoScaler"] = {"autoscaleEnabled": True, "minReplicas": 2, "maxReplicas": 10}

    assert scheduler.replica_count(autoscaled) == 2
    reason = scheduler.unschedulable_reason(cluster("Standard_D4s_v5", 1), "aks", autoscaled)
    assert reason is not None and "1 Insufficient cpu" in reason
