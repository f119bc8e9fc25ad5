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
    CLUSTER_PURPOSES,
    CPU_SIZES,
    VmSize,
    gpu_sizes,
    retirement_notice,
    validate_aks_cluster,
    vm_size_info,
)

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


def vm_size_choices(today: dt.date | None = None) -> list[tuple[str, list[tuple[str, str]]]]:
    """Sizes that can still be created, GPU sizes first and marked, priced from the price table."""
    today = today or dt.date.today()
    prices = selectors.vm_price_map()

    def label(size: VmSize) -> str:
        price = _price(size, prices)
        cost = f"${price:.3f}/h per node" if price is not None else "no price in the table"
        gpu = f"GPU {size.gpu_label}" if size.is_gpu else "no GPU"
        retiring = f" · retiring {size.retirement_planned_on:%d %b %Y}" if size.retirement_planned_on else ""
        return f"{size.vm_size} — {gpu}, {size.vcpus} vCPU, {size.memory_gb:g} GB, {cost}{retiring}"

    cpus = sorted((s for s in CPU_SIZES if not s.is_retired(today)), key=lambda s: (s.vcpus, s.vm_size))
    return [
        ("GPU sizes", [(s.vm_size, f"🟢 {label(s)}") for s in gpu_sizes(today)]),
        ("CPU sizes (no GPU: no GPU deployments)", [(s.vm_size, label(s)) for s in cpus]),
    ]


class AzureClusterForm(ClusterBaseForm):
    """Provision a new AKS cluster in a workspace, or attach an existing AKS cluster to it."""

    field_order = [
        "workspace",
        "mode",
        "name",
        "vm_size",
        "node_count",
        "cluster_purpose",
        "location",
        "attach_resource_id",
    ]  # then the teardown fields every cluster form ends with

    CREATE, ATTACH = "create", "attach"

    workspace = forms.ModelChoiceField(queryset=Workspace.objects.order_by("name"), empty_label=None)
    mode = forms.ChoiceField(
        choices=[(CREATE, "Provision a new AKS cluster"), (ATTACH, "Attach an existing AKS cluster")],
        initial=CREATE,
        widget=forms.RadioSelect,
    )
    name = forms.CharField(
        max_length=16, validators=[cluster_name_rule], help_text="2 to 16 letters, digits or dashes."
    )
    vm_size = forms.CharField(max_length=64, required=False, label="VM size", widget=forms.Select())
    node_count = forms.IntegerField(
        initial=1, validators=[MinValueValidator(1), MaxValueValidator(100)], label="Nodes"
    )
    cluster_purpose = forms.ChoiceField(
        choices=[(p, p) for p in CLUSTER_PURPOSES],
        initial="DevTest",
        help_text="FastProd needs at least 12 vCPUs in the cluster; DevTest runs on one node.",
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
        return data


class AzureKeyForm(forms.Form):
    key = forms.ChoiceField(choices=[("Primary", "Primary"), ("Secondary", "Secondary")])
    idempotency_key = forms.CharField(required=False, max_length=64, widget=forms.HiddenInput)


class AzureLogsForm(forms.Form):
    lines = forms.IntegerField(
        required=False, initial=200, validators=[MinValueValidator(10), MaxValueValidator(5000)]
    )
    idempotency_key = forms.CharField(required=False, max_length=64, widget=forms.HiddenInput)
