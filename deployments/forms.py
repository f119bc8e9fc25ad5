"""Forms: every bad input gets a message naming the rule it broke; nothing is saved until all pass."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django import forms
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.utils import timezone

from deployments.environments import default_entry_script, default_environment_yaml
from deployments.models import Cluster, Deployment, RegisteredModel
from deployments.states import ProvisioningState, ServiceState

# Azure ML's rules: compute target names are 2-16 letters, digits or dashes; service names are
# 3-32 lowercase letters, digits or dashes and start with a letter.
cluster_name_rule = RegexValidator(
    r"^[A-Za-z0-9-]{2,16}$", "A cluster name is 2 to 16 letters, digits or dashes (Azure's rule for compute targets)."
)
service_name_rule = RegexValidator(
    r"^[a-z][a-z0-9-]{2,31}$",
    "A deployment name is 3 to 32 lowercase letters, digits or dashes, starting with a letter (Azure's rule for services).",
)
RESERVED_CLUSTER_NAMES = {"amlcompute", "local", "containerinstance"}


class IdempotentForm(forms.Form):
    """Carries a key minted when the form is rendered, so submitting it twice starts one operation."""

    idempotency_key = forms.CharField(widget=forms.HiddenInput, max_length=64)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.initial.setdefault("idempotency_key", uuid.uuid4().hex)


class ClusterForm(IdempotentForm):
    name = forms.CharField(max_length=16, validators=[cluster_name_rule], initial="local-gpu")
    expires_in_hours = forms.IntegerField(
        required=False,
        validators=[MinValueValidator(1), MaxValueValidator(24 * 90)],
        help_text="Tear down after this many hours (optional).",
    )
    idle_teardown_hours = forms.IntegerField(
        required=False,
        validators=[MinValueValidator(1), MaxValueValidator(24 * 90)],
        help_text="Tear down after this many hours without a scoring request (optional).",
    )
    auto_teardown = forms.BooleanField(
        required=False, help_text="Delete it automatically when it expires; otherwise you are only warned."
    )

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if name.lower() in RESERVED_CLUSTER_NAMES:
            raise forms.ValidationError(f"{name} is a name Azure ML reserves; choose another.")
        if Cluster.objects.filter(name=name).exclude(provisioning_state=ProvisioningState.DELETED).exists():
            raise forms.ValidationError(f"A cluster named {name} already exists.")
        return name

    def expires_at(self):
        hours = self.cleaned_data.get("expires_in_hours")
        return timezone.now() + timedelta(hours=hours) if hours else None


class DeploymentForm(IdempotentForm):
    name = forms.CharField(max_length=32, validators=[service_name_rule])
    cluster = forms.ModelChoiceField(queryset=Cluster.objects.none())
    model = forms.ModelChoiceField(queryset=RegisteredModel.objects.all())
    entry_script = forms.CharField(widget=forms.Textarea(attrs={"rows": 18, "class": "code", "spellcheck": "false"}))
    environment_yaml = forms.CharField(
        label="Environment (conda YAML)", widget=forms.Textarea(attrs={"rows": 12, "class": "code", "spellcheck": "false"})
    )
    gpu_enabled = forms.BooleanField(required=False, label="GPU")
    gpu_cores = forms.IntegerField(initial=0, validators=[MinValueValidator(0), MaxValueValidator(8)], label="GPUs per replica")
    replicas = forms.IntegerField(initial=1, validators=[MinValueValidator(1), MaxValueValidator(16)])
    cpu_cores = forms.FloatField(initial=1.0, validators=[MinValueValidator(0.1), MaxValueValidator(64)], label="CPU cores")
    memory_gb = forms.FloatField(initial=1.0, validators=[MinValueValidator(0.5), MaxValueValidator(512)], label="Memory (GB)")
    autoscale_enabled = forms.BooleanField(required=False, label="Autoscale")
    autoscale_min_replicas = forms.IntegerField(initial=1, validators=[MinValueValidator(1), MaxValueValidator(100)])
    autoscale_max_replicas = forms.IntegerField(initial=1, validators=[MinValueValidator(1), MaxValueValidator(100)])
    autoscale_target_utilization = forms.IntegerField(initial=70, validators=[MinValueValidator(1), MaxValueValidator(100)])

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["cluster"].queryset = Cluster.objects.filter(provisioning_state=ProvisioningState.SUCCEEDED)
        if not self.is_bound:
            self.initial.setdefault("entry_script", default_entry_script())
            self.initial.setdefault("environment_yaml", default_environment_yaml())
            self.initial.setdefault("model", RegisteredModel.objects.order_by("-created_at").first())
            self.initial.setdefault("cluster", self.fields["cluster"].queryset.first())

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if Deployment.objects.filter(name=name).exclude(state=ServiceState.DELETED).exists():
            raise forms.ValidationError(f"A deployment named {name} already exists.")
        return name

    def clean_entry_script(self) -> str:
        source = self.cleaned_data["entry_script"]
        try:
            compile(source, "score.py", "exec")
        except SyntaxError as exc:
            raise forms.ValidationError(f"score.py line {exc.lineno}: {exc.msg}") from exc
        return source

    def clean(self) -> dict:
        data = super().clean()
        cluster: Cluster | None = data.get("cluster")
        if data.get("gpu_enabled"):
            if cluster is not None and not cluster.has_gpu:
                self.add_error(
                    "gpu_enabled",
                    f"{cluster.name} has no GPU: switch the GPU off or choose a cluster with GPU nodes "
                    "(Azure refuses a GPU service on a CPU-only cluster too).",
                )
            if not data.get("gpu_cores"):
                data["gpu_cores"] = 1
        elif data.get("gpu_cores"):
            self.add_error("gpu_cores", "GPUs per replica needs the GPU switched on.")
        if data.get("autoscale_enabled"):
            low, high = data.get("autoscale_min_replicas"), data.get("autoscale_max_replicas")
            if low is not None and high is not None and low > high:
                self.add_error("autoscale_min_replicas", f"Autoscale minimum ({low}) is above the maximum ({high}).")
            if cluster is not None and cluster.is_local:
                self.add_error("autoscale_enabled", "The local target runs a fixed number of replicas: switch autoscale off.")
        return data

    def config(self) -> dict:
        keys = (
            "gpu_enabled", "gpu_cores", "replicas", "cpu_cores", "memory_gb", "autoscale_enabled",
            "autoscale_min_replicas", "autoscale_max_replicas", "autoscale_target_utilization",
        )
        return {k: self.cleaned_data[k] for k in keys}


class ConfirmForm(IdempotentForm):
    """A delete button: POST with CSRF token and an idempotency key."""
