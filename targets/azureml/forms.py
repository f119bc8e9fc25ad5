"""Forms for the Azure half: connecting a workspace, and provisioning or attaching an AKS cluster.

Every Azure rule Lynx can check before anything is sent is checked here, with a message that says what
to do instead: a retired VM size names a current one, FastProd below 12 vCPUs says how many nodes it needs.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Any

from django import forms
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator

from deployments import selectors
from deployments.forms import ClusterBaseForm, IdempotentForm, cluster_name_rule
from deployments.models import Workspace
from deployments.vm_sizes import (
    AZURE_NAME_HYPHEN_DIGITS_END,
    AZURE_NAME_HYPHEN_DIGITS_RULE,
    CLUSTER_PURPOSES,
    CPU_SIZES,
    VmSize,
    gpu_sizes,
    retirement_notice,
    validate_aks_cluster,
    vm_size_info,
)
from targets.azureml.certificates import check_tls_pair

_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
uuid_rule = RegexValidator(rf"^{_UUID}$", "Azure writes this as a GUID: 8-4-4-4-12 hexadecimal digits.")
tenant_rule = RegexValidator(
    rf"^({_UUID}|[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+)$",
    "A tenant is a GUID or a verified domain such as contoso.onmicrosoft.com.",
)
resource_group_rule = RegexValidator(
    r"^[-\w.()]{0,89}[-\w()]$",
    "A resource group name is 1 to 90 letters, digits, underscores, dashes, dots or parentheses, "
    "not ending in a dot.",
)
workspace_name_rule = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_-]{2,32}$",
    "An Azure ML workspace name is 3 to 33 letters, digits, dashes or underscores, "
    "starting with a letter or digit.",
)
location_rule = RegexValidator(r"^[a-z0-9]+$", "Write the region as Azure does, e.g. eastus or westeurope.")
label_rule = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
    "A label is up to 64 letters, digits, dots, dashes or underscores.",
)
AKS_RESOURCE_ID = re.compile(
    r"^/subscriptions/[^/]+/resourcegroups/[^/]+/providers/Microsoft\.ContainerService/managedClusters/[^/]+$",
    re.IGNORECASE,
)


class WorkspaceForm(IdempotentForm):
    name = forms.CharField(
        max_length=64, validators=[label_rule], help_text="What Lynx calls this workspace (e.g. team-prod)."
    )
    subscription_id = forms.CharField(max_length=64, validators=[uuid_rule], label="Subscription ID")
    resource_group = forms.CharField(max_length=90, validators=[resource_group_rule])
    workspace_name = forms.CharField(max_length=64, validators=[workspace_name_rule], label="Workspace name")
    tenant_id = forms.CharField(max_length=64, validators=[tenant_rule], label="Tenant ID")
    client_id = forms.CharField(
        max_length=64, validators=[uuid_rule], label="Service principal (application) ID"
    )
    client_secret = forms.CharField(
        max_length=512,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        label="Client secret",
        help_text="Stored encrypted and never shown again.",
    )
    location = forms.CharField(
        max_length=32,
        required=False,
        validators=[location_rule],
        help_text="Optional: filled in by the test.",
    )

    field_order = [
        "name",
        "subscription_id",
        "resource_group",
        "workspace_name",
        "tenant_id",
        "client_id",
        "client_secret",
        "location",
    ]

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if Workspace.objects.filter(name__iexact=name).exists():
            raise forms.ValidationError(f"A workspace named {name} already exists.")
        return name


class WorkspaceSecretForm(IdempotentForm):
    client_secret = forms.CharField(
        max_length=512,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        label="New client secret",
        help_text="Replaces the stored secret (encrypted) and tests the connection with it.",
    )


def _price(size: VmSize, prices: dict) -> Decimal | float | None:
    row = prices.get(size.vm_size.lower())
    if row is not None and row.price_per_hour is not None:
        return row.price_per_hour
    return size.price_eastus_per_hour


def vm_size_choices(
    today: dt.date | None = None, per: str = "node"
) -> list[tuple[str, list[tuple[str, str]]]]:
    """Sizes that can still be created, GPU sizes first and marked, priced from the price table (per node of
    a cluster, or per instance of a managed deployment)."""
    today = today or dt.date.today()
    prices = selectors.vm_price_map()

    def label(size: VmSize) -> str:
        price = _price(size, prices)
        cost = f"${price:.3f}/h per {per}" if price is not None else "no price in the table"
        gpu = f"GPU {size.gpu_label}" if size.is_gpu else "no GPU"
        retiring = (
            f" · capacity limited, retiring {size.retirement_planned_on:%d %b %Y}"
            if size.retirement_planned_on
            else ""
        )
        return f"{size.vm_size} — {gpu}, {size.vcpus} vCPU, {size.memory_gb:g} GB, {cost}{retiring}"

    # Current sizes first; sizes announced for retirement (Dv2/DSv2: capacity limited, restricted on new
    # subscriptions) last, so none of them looks like the default.
    cpus = sorted(
        (s for s in CPU_SIZES if not s.is_retired(today)),
        key=lambda s: (s.retirement_planned_on is not None, s.vcpus, s.vm_size),
    )
    return [
        ("GPU sizes", [(s.vm_size, f"🟢 {label(s)}") for s in gpu_sizes(today)]),
        ("CPU sizes (no GPU: no GPU deployments)", [(s.vm_size, label(s)) for s in cpus]),
    ]


ATTACH_REASON = (
    "Recommended: create the AKS cluster yourself (Standard load balancer, a Kubernetes version you choose) "
    "and attach it. Clusters that Azure ML v1 creates got a Basic load balancer, which AKS dropped on "
    "30 September 2025; whether v1 creation still works in 2026 is unverified."
)
CREATE_WARNING = (
    "Unverified in 2026: Azure ML v1 created clusters with a Basic load balancer, retired on 30 September "
    "2025, and SDK v1 support ended on 30 June 2026. Prefer attaching a cluster you created in AKS."
)
TLS_RENEWAL_NOTE = (
    "Microsoft's certificate is no longer renewed automatically (v1 is deprecated): renew it by hand from "
    "the cluster's page before it expires; Azure takes about 5 hours to roll a renewal out."
)
# Azure's leaf domain label: a DNS label (letters, digits, hyphens; not starting or ending with a hyphen).
leaf_label_rule = RegexValidator(
    r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
    "A leaf domain label is 1 to 63 lowercase letters, digits or hyphens, not starting or ending with one.",
)
cname_rule = RegexValidator(
    r"^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$",
    "Write the CNAME as a DNS name, e.g. scoring.contoso.com.",
)
azure_name_end_rule = RegexValidator(
    AZURE_NAME_HYPHEN_DIGITS_END, AZURE_NAME_HYPHEN_DIGITS_RULE, inverse_match=True
)
TLS_NONE, TLS_LEAF, TLS_CUSTOM = "", "leaf", "custom"
TLS_CHOICES = [
    (TLS_NONE, "No TLS (plain http: keys and data travel in clear)"),
    (TLS_LEAF, "Microsoft's certificate for a leaf domain label"),
    (TLS_CUSTOM, "My own certificate and CNAME"),
]
PEM_MAX_BYTES = 64 * 1024


class TlsFieldsMixin(forms.Form):
    """TLS on the cluster's scoring front end: Microsoft's leaf-domain certificate or the owner's own."""

    tls_mode = forms.ChoiceField(
        choices=TLS_CHOICES, required=False, label="TLS", widget=forms.RadioSelect, help_text=TLS_RENEWAL_NOTE
    )
    tls_leaf_domain_label = forms.CharField(
        max_length=63,
        required=False,
        validators=[leaf_label_rule],
        label="Leaf domain label",
        help_text="The scoring host becomes <label>###.<region>.cloudapp.azure.com.",
    )
    tls_cname = forms.CharField(max_length=253, required=False, validators=[cname_rule], label="CNAME")
    tls_certificate = forms.FileField(required=False, label="Certificate (PEM)")
    tls_key = forms.FileField(
        required=False, label="Private key (PEM)", help_text="Stored encrypted and never shown again."
    )

    def _pem(self, field: str) -> str:
        upload = self.cleaned_data.get(field)
        if not upload:
            self.add_error(field, "Upload it for TLS with your own certificate.")
            return ""
        if upload.size > PEM_MAX_BYTES:
            self.add_error(field, f"A PEM file is a few KiB; this one is over {PEM_MAX_BYTES // 1024} KiB.")
            return ""
        return upload.read().decode("utf-8", "replace")

    def _own_certificate(self, cname: str) -> tuple[str, str]:
        """The uploaded certificate and key, parsed and checked against each other and the CNAME, as they
        are stored (re-serialised); ("", "") with the reasons on the form when they cannot be used."""
        certificate, key = self._pem("tls_certificate"), self._pem("tls_key")
        if not (certificate and key):
            return "", ""
        checked = check_tls_pair(certificate, key, cname)
        for field, messages in checked.errors.items():
            for message in messages:
                self.add_error(field, message)
        return checked.certificate, checked.key

    def clean_tls(self, *, internal_load_balancer: bool = False) -> dict[str, str]:
        """The TLS settings as the services take them (key in clear, encrypted by the service)."""
        data = self.cleaned_data
        mode = data.get("tls_mode") or TLS_NONE
        if mode == TLS_NONE:
            if internal_load_balancer:
                self.add_error("tls_mode", "An internal load balancer needs TLS with your own certificate.")
            return {"tls_mode": ""}
        if mode == TLS_LEAF:
            if internal_load_balancer:
                self.add_error(
                    "tls_mode",
                    "An internal load balancer has no public name for Microsoft's certificate: "
                    "upload your own.",
                )
            if not data.get("tls_leaf_domain_label"):
                self.add_error(
                    "tls_leaf_domain_label", "Give the leaf domain label for Microsoft's certificate."
                )
            return {"tls_mode": mode, "tls_leaf_domain_label": data.get("tls_leaf_domain_label") or ""}
        cname = data.get("tls_cname") or ""
        if not cname and "tls_cname" not in self.errors:
            self.add_error("tls_cname", "Give the CNAME your certificate is for.")
        certificate, key = self._own_certificate(cname)
        return {"tls_mode": mode, "tls_cname": cname, "tls_certificate": certificate, "tls_key": key}


class AzureTlsForm(TlsFieldsMixin, IdempotentForm):
    """Enable TLS on an existing cluster, or renew its certificate."""

    renew = forms.BooleanField(required=False, label="Renew Microsoft's certificate (same leaf label)")


class AzureClusterForm(TlsFieldsMixin, ClusterBaseForm):
    """Attach an existing AKS cluster to a workspace (recommended), or provision a new one through v1."""

    field_order = [
        "workspace",
        "mode",
        "name",
        "attach_resource_id",
        "vm_size",
        "node_count",
        "cluster_purpose",
        "location",
        "internal_load_balancer",
        "tls_mode",
        "tls_leaf_domain_label",
        "tls_cname",
        "tls_certificate",
        "tls_key",
    ]  # then the teardown fields every cluster form ends with

    CREATE, ATTACH = "create", "attach"

    workspace = forms.ModelChoiceField(queryset=Workspace.objects.order_by("name"), empty_label=None)
    mode = forms.ChoiceField(
        choices=[
            (ATTACH, "Attach an existing AKS cluster (recommended)"),
            (CREATE, "Provision a new AKS cluster through Azure ML v1 (unverified in 2026)"),
        ],
        initial=ATTACH,
        widget=forms.RadioSelect,
        help_text=ATTACH_REASON,
    )
    name = forms.CharField(
        max_length=24,
        validators=[cluster_name_rule, azure_name_end_rule],
        help_text=(
            "3 to 24 letters, digits or hyphens; starts with a letter, ends with a letter or digit, "
            "and not with a hyphen and digits (gpu-1)."
        ),
    )
    internal_load_balancer = forms.BooleanField(
        required=False,
        label="Internal load balancer",
        help_text="Scoring on a private IP in the cluster's network; TLS then needs your own certificate.",
    )
    vm_size = forms.CharField(max_length=64, required=False, label="VM size", widget=forms.Select())
    node_count = forms.IntegerField(
        initial=1, validators=[MinValueValidator(1), MaxValueValidator(100)], label="Nodes"
    )
    cluster_purpose = forms.ChoiceField(
        choices=[(p, p) for p in CLUSTER_PURPOSES],
        initial="DevTest",
        help_text="FastProd needs at least 3 nodes and 12 vCPUs in the cluster; DevTest runs on one node.",
    )
    location = forms.CharField(
        max_length=32, required=False, validators=[location_rule], help_text="Empty: the workspace's region."
    )
    attach_resource_id = forms.CharField(
        max_length=400,
        required=False,
        label="AKS resource ID (attach only)",
        help_text="/subscriptions/…/resourceGroups/…/providers/Microsoft.ContainerService/managedClusters/…",
    )

    def __init__(self, *args, today: dt.date | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["expires_in_hours"].help_text += " Azure bills for the cluster while it exists."
        self.today = today or dt.date.today()
        self.warnings: list[str] = []
        self.fields["vm_size"].widget.choices = [("", "— choose a VM size —"), *vm_size_choices(self.today)]
        if not self.is_bound:
            first_gpu = gpu_sizes(self.today)
            self.initial.setdefault("vm_size", first_gpu[0].vm_size if first_gpu else "")
            workspaces = self.fields["workspace"]
            # The field declared above, with its queryset.
            assert isinstance(workspaces, forms.ModelChoiceField) and workspaces.queryset is not None
            self.initial.setdefault("workspace", workspaces.queryset.first())

    def clean_workspace(self) -> Workspace:
        workspace = self.cleaned_data["workspace"]
        if workspace.last_check_ok is False:
            raise forms.ValidationError(
                f"The last connection test of {workspace.name} failed ({workspace.last_check_result[:300]}). "
                "Fix the connection on the workspace's page first."
            )
        return workspace

    def clean(self) -> dict[str, Any]:
        super().clean()  # Form.clean returns self.cleaned_data
        data = self.cleaned_data
        data["tls"] = self.clean_tls(internal_load_balancer=bool(data.get("internal_load_balancer")))
        if data.get("mode") == self.ATTACH:
            resource_id = (data.get("attach_resource_id") or "").strip()
            if not resource_id:
                self.add_error("attach_resource_id", "Give the AKS cluster's resource ID to attach it.")
            elif not AKS_RESOURCE_ID.match(resource_id):
                self.add_error(
                    "attach_resource_id",
                    "That is not an AKS resource ID: it looks like /subscriptions/<id>/resourceGroups/<group>"
                    "/providers/Microsoft.ContainerService/managedClusters/<name>.",
                )
            data["attach_resource_id"] = resource_id
            data["vm_size"] = ""  # Azure reports the attached cluster's size and node count once attached
            data["node_count"] = 1
            return data
        data["attach_resource_id"] = ""
        vm_size = (data.get("vm_size") or "").strip()
        if not vm_size:
            self.add_error("vm_size", "Choose a VM size.")
            return data
        if data.get("node_count") is None or not data.get("cluster_purpose"):
            return data  # their own errors are already shown
        if info := vm_size_info(vm_size):
            data["vm_size"] = vm_size = info.vm_size  # Azure's spelling (its names are case-insensitive)
        for problem in validate_aks_cluster(vm_size, data["node_count"], data["cluster_purpose"], self.today):
            self.add_error(
                "node_count" if problem.startswith(("FastProd", "An AKS cluster")) else "vm_size", problem
            )
        if notice := retirement_notice(vm_size, self.today):
            self.warnings.append(notice)
        self.warnings.append(CREATE_WARNING)
        return data


MANAGED_REASON = (
    "Recommended for a new deployment: Azure ML v2 managed online endpoints. There is no cluster to create, "
    "upgrade, load-balance or give a certificate: each deployment gets its own endpoint (HTTPS, key auth) on "
    "whole VMs of the instance type chosen here, billed per instance and hour while the deployment exists."
)


class ManagedComputeForm(ClusterBaseForm):
    """An instance type in a workspace for managed online endpoints: what Lynx calls a cluster there."""

    field_order = ["workspace", "name", "vm_size", "location"]  # then the teardown fields

    workspace = forms.ModelChoiceField(queryset=Workspace.objects.order_by("name"), empty_label=None)
    name = forms.CharField(
        max_length=24,
        validators=[cluster_name_rule],
        help_text="Lynx's name for this instance type (nothing of this name is created on Azure).",
    )
    vm_size = forms.CharField(max_length=64, label="Instance type", widget=forms.Select())
    location = forms.CharField(
        max_length=32, required=False, validators=[location_rule], help_text="Empty: the workspace's region."
    )

    def __init__(self, *args, today: dt.date | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields[
            "expires_in_hours"
        ].help_text += " When it expires, its deployments are deleted (their endpoints stop billing)."
        self.today = today or dt.date.today()
        self.warnings: list[str] = []
        choices = vm_size_choices(self.today, per="instance")
        self.fields["vm_size"].widget.choices = [("", "— choose an instance type —"), *choices]
        if not self.is_bound:
            first_gpu = gpu_sizes(self.today)
            self.initial.setdefault("vm_size", first_gpu[0].vm_size if first_gpu else "")
            workspaces = self.fields["workspace"]
            assert isinstance(workspaces, forms.ModelChoiceField) and workspaces.queryset is not None
            self.initial.setdefault("workspace", workspaces.queryset.first())

    clean_workspace = AzureClusterForm.clean_workspace

    def clean_vm_size(self) -> str:
        vm_size = self.cleaned_data["vm_size"].strip()
        info = vm_size_info(vm_size)
        if info is None:
            raise forms.ValidationError(f"Lynx does not know the instance type {vm_size}: choose one listed.")
        if info.is_retired(self.today):
            raise forms.ValidationError(
                f"{info.vm_size} is retired: Azure no longer deploys it. "
                f"Choose {info.replacement or 'a current size'}."
            )
        if notice := retirement_notice(info.vm_size, self.today):
            self.warnings.append(notice)
        return info.vm_size


KUBERNETES_REASON = (
    "Kubernetes online endpoints (Azure ML v2) run on an AKS cluster you keep: your nodes, your network, "
    "autoscale by utilisation. The cluster needs the Azure ML extension with inference enabled "
    "(az k8s-extension create --extension-type Microsoft.AzureML.Kubernetes --config enableInference=True …) "
    "and, for GPU deployments, an instance type whose limits include nvidia.com/gpu (kubectl apply of an "
    "amlarc.azureml.com InstanceType): neither can be made through Azure ML's API, so Lynx does not make "
    "them. Lynx attaches the cluster in the namespace lynx; a cluster attached to v1 keeps its v1 services "
    "meanwhile."
)


class KubernetesComputeForm(ClusterBaseForm):
    """Attach an AKS cluster that has the Azure ML extension as Kubernetes compute (v2)."""

    field_order = ["workspace", "name", "attach_resource_id"]  # then the teardown fields

    workspace = forms.ModelChoiceField(queryset=Workspace.objects.order_by("name"), empty_label=None)
    name = forms.CharField(
        max_length=24,
        validators=[cluster_name_rule, azure_name_end_rule],
        help_text="The compute target's name in the workspace: 3 to 24 letters, digits or hyphens.",
    )
    attach_resource_id = forms.CharField(
        max_length=400,
        label="AKS resource ID",
        help_text="/subscriptions/…/resourceGroups/…/providers/Microsoft.ContainerService/managedClusters/…",
    )

    clean_workspace = AzureClusterForm.clean_workspace

    def clean_attach_resource_id(self) -> str:
        resource_id = self.cleaned_data["attach_resource_id"].strip()
        if not AKS_RESOURCE_ID.match(resource_id):
            raise forms.ValidationError(
                "That is not an AKS resource ID: it looks like /subscriptions/<id>/resourceGroups/<group>"
                "/providers/Microsoft.ContainerService/managedClusters/<name>."
            )
        return resource_id


class AzureKeyForm(forms.Form):
    key = forms.ChoiceField(choices=[("Primary", "Primary"), ("Secondary", "Secondary")])
    idempotency_key = forms.CharField(required=False, max_length=64, widget=forms.HiddenInput)


class AzureLogsForm(forms.Form):
    lines = forms.IntegerField(
        required=False, initial=200, validators=[MinValueValidator(10), MaxValueValidator(5000)]
    )
    idempotency_key = forms.CharField(required=False, max_length=64, widget=forms.HiddenInput)
