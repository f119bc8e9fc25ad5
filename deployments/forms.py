"""Forms: every bad input gets a message naming the rule it broke; nothing is saved until all pass."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.http import QueryDict
from django.utils import timezone

from deployments.backends import target_traits
from deployments.cuda import GPU_BASE_IMAGE, check_gpu_environment
from deployments.entry_scripts import check_entry_script
from deployments.environments import check_environment, default_entry_script, default_environment_yaml
from deployments.model_archives import LABELS_MAX_BYTES
from deployments.models import Cluster, Deployment, RegisteredModel
from deployments.services.deployments import CONFIG_FIELDS
from deployments.states import ProvisioningState, ServiceState
from deployments.vm_sizes import COMPUTE_NAME_PATTERN, COMPUTE_NAME_RULE

# Azure ML's rules: compute target names are 3-24 letters, digits or hyphens, start with a letter and end with
# a letter or digit (deployments.vm_sizes); service names are 3-32 lowercase letters, digits or dashes,
# start with a letter and end with a letter or digit (Azure's rule for services and, in azure-ai-ml,
# for online endpoints: ^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$).
cluster_name_rule = RegexValidator(COMPUTE_NAME_PATTERN, COMPUTE_NAME_RULE)
service_name_rule = RegexValidator(
    r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$",
    "A deployment name is 3 to 32 lowercase letters, digits or dashes, starting with a letter and ending "
    "with a letter or digit (Azure's rule for services and endpoints).",
)
RESERVED_CLUSTER_NAMES = {"amlcompute", "local", "containerinstance"}
# Azure ML's rule for model names (and what the local runtime lays out as a folder name).
model_name_rule = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
    "A model name is up to 64 letters, digits, dots, dashes or underscores, starting with a letter or digit.",
)
TEXT_UPLOAD_MAX_BYTES = 512 * 1024
# Settings that matter only while their switch is on. The page disables them while it is off (lynx.js toggles
# them), and a browser leaves a disabled field out of what it sends: a field left out keeps its default.
SWITCHED_FIELDS = {
    "gpu_cores": "gpu_enabled",
    "autoscale_min_replicas": "autoscale_enabled",
    "autoscale_max_replicas": "autoscale_enabled",
    "autoscale_target_utilization": "autoscale_enabled",
}


class IdempotentForm(forms.Form):
    """Carries a key minted when the form is rendered, so submitting it twice starts one operation."""

    idempotency_key = forms.CharField(widget=forms.HiddenInput, max_length=64)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.initial.setdefault("idempotency_key", uuid.uuid4().hex)


class ClusterBaseForm(IdempotentForm):
    """What every new cluster asks, local or on Azure: a free name, and when to tear it down."""

    name = forms.CharField(max_length=24, validators=[cluster_name_rule])
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


class ClusterForm(ClusterBaseForm):
    """A local cluster: the machine Lynx runs on."""

    name = forms.CharField(max_length=24, validators=[cluster_name_rule], initial="local-gpu")


def _uploaded_text(upload, what: str) -> str:
    if upload.size > TEXT_UPLOAD_MAX_BYTES:
        raise forms.ValidationError(f"The uploaded {what} is over {TEXT_UPLOAD_MAX_BYTES // 1024} KiB.")
    raw = upload.read()
    try:
        return raw.decode("utf-8-sig").replace("\r\n", "\n")
    except UnicodeDecodeError:
        raise forms.ValidationError(f"The uploaded {what} is not UTF-8 text.") from None


class ServiceConfigForm(IdempotentForm):
    """What a deployment runs and with how much: shared by deploying and updating.

    The entry script and the environment are typed in the page or uploaded (an upload wins), then checked:
    errors stop the form, warnings are kept in `self.warnings` for the page to show.
    """

    model = forms.ModelChoiceField(queryset=RegisteredModel.objects.all())
    entry_script = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 18, "class": "code", "spellcheck": "false"}),
    )
    entry_script_file = forms.FileField(required=False, label="…or upload score.py")
    environment_yaml = forms.CharField(
        required=False,
        strip=False,
        label="Environment (conda YAML)",
        widget=forms.Textarea(attrs={"rows": 12, "class": "code", "spellcheck": "false"}),
    )
    environment_file = forms.FileField(required=False, label="…or upload the conda .yml")
    gpu_enabled = forms.BooleanField(required=False, label="GPU")
    gpu_cores = forms.IntegerField(
        initial=0, validators=[MinValueValidator(0), MaxValueValidator(8)], label="GPUs per replica"
    )
    replicas = forms.IntegerField(initial=1, validators=[MinValueValidator(1), MaxValueValidator(16)])
    cpu_cores = forms.FloatField(
        initial=1.0, validators=[MinValueValidator(0.1), MaxValueValidator(64)], label="CPU cores"
    )
    memory_gb = forms.FloatField(
        initial=1.0, validators=[MinValueValidator(0.5), MaxValueValidator(512)], label="Memory (GB)"
    )
    autoscale_enabled = forms.BooleanField(required=False, label="Autoscale")
    autoscale_min_replicas = forms.IntegerField(
        initial=1, validators=[MinValueValidator(1), MaxValueValidator(100)]
    )
    autoscale_max_replicas = forms.IntegerField(
        initial=1, validators=[MinValueValidator(1), MaxValueValidator(100)]
    )
    autoscale_target_utilization = forms.IntegerField(
        initial=70, validators=[MinValueValidator(1), MaxValueValidator(100)]
    )
    # Dynamic batching (scoring.batching); left blank, they keep the documented defaults.
    max_batch_size = forms.IntegerField(
        required=False,
        initial=32,
        validators=[MinValueValidator(1), MaxValueValidator(256)],
        label="Max batch size",
        help_text="Requests arriving together share one model call, up to this many; 1 turns batching off.",
    )
    max_batch_wait_ms = forms.IntegerField(
        required=False,
        initial=50,
        validators=[MinValueValidator(0), MaxValueValidator(1000)],
        label="Max batch wait (ms)",
        help_text=(
            "A call waits for more requests only while more are expected, for a tenth of a recent model call "
            "(at least 5 ms), and never longer than this."
        ),
    )
    token_auth_enabled = forms.BooleanField(
        required=False,
        label="Token auth (Azure)",
        help_text=(
            "Clients send a short-lived token from get_access_token() instead of a fixed key. Off: key auth "
            "(Azure refuses both at once)."
        ),
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.warnings: list[str] = []
        self._keep_left_out_values()
        self._mark_switched_fields()

    def _cluster(self) -> Cluster | None:
        raise NotImplementedError

    def _kept_value(self, field: str) -> Any:
        """What a switched setting left out of the submission is: its default."""
        return self.fields[field].initial

    def _keep_left_out_values(self) -> None:
        if not self.is_bound:
            return
        # Absent, not blank: a field the person cleared is still sent (empty) and still refused as required.
        absent = [field for field in SWITCHED_FIELDS if self.add_prefix(field) not in self.data]
        if absent:
            # request.POST is an immutable QueryDict; the API passes a dict.
            data = self.data.copy() if isinstance(self.data, QueryDict) else dict(self.data)
            for field in absent:
                data[self.add_prefix(field)] = str(self._kept_value(field))
            self.data = data

    def _mark_switched_fields(self) -> None:
        """Render each switched setting disabled while its switch is off, as the bound data or the initial
        values have it; `data-switched-by` names the switch for lynx.js."""
        for field, switch in SWITCHED_FIELDS.items():
            widget = self.fields[switch].widget
            if self.is_bound:
                on = widget.value_from_datadict(self.data, self.files, self.add_prefix(switch))
            else:
                on = self.get_initial_for_field(self.fields[switch], switch)
            attrs = self.fields[field].widget.attrs
            attrs["data-switched-by"] = switch
            if on:
                attrs.pop("disabled", None)
            else:
                attrs["disabled"] = True

    def _text(self, data: dict, field: str, file_field: str, what: str) -> str:
        upload = data.get(file_field)
        if upload:
            try:
                data[field] = _uploaded_text(upload, what)
            except forms.ValidationError as exc:
                self.add_error(file_field, exc)
                return ""
        text = (data.get(field) or "").replace("\r\n", "\n")  # browsers send a textarea with CRLF
        data[field] = text
        if not text.strip():
            self.add_error(field, f"Write the {what} here or upload it.")
        return text

    def _check_entry_script(self, data: dict) -> None:
        source = self._text(data, "entry_script", "entry_script_file", "entry script")
        if not source.strip():
            return
        check = check_entry_script(source)
        for problem in check.errors:
            self.add_error("entry_script", str(problem))
        self.warnings += [str(problem) for problem in check.warnings]

    def _check_environment(self, data: dict) -> None:
        text = self._text(data, "environment_yaml", "environment_file", "environment")
        if not text.strip():
            return
        check = check_environment(text)
        for error in check.errors:
            self.add_error("environment_yaml", error)
        self.warnings += check.warnings

    def _check_gpu_environment(self, data: dict, cluster: Cluster | None) -> None:
        """A GPU deployment on a target that builds an image from the environment (Azure) must ask for a
        framework that can use the GPU image's CUDA; the untouched default becomes the GPU default."""
        if not data.get("gpu_enabled") or cluster is None or target_traits(cluster.backend).on_this_host:
            return
        text = data.get("environment_yaml") or ""
        if text.strip() == default_environment_yaml().strip():
            data["environment_yaml"] = text = default_environment_yaml(gpu=True)
        check = check_gpu_environment(text, GPU_BASE_IMAGE)
        for error in check.errors:
            self.add_error("environment_yaml", error)
        self.warnings += check.warnings

    def clean(self) -> dict[str, Any]:
        super().clean()  # Form.clean returns self.cleaned_data
        data = self.cleaned_data
        self._check_entry_script(data)
        self._check_environment(data)
        cluster = self._cluster()
        if "environment_yaml" not in self.errors:
            self._check_gpu_environment(data, cluster)
        if (
            data.get("token_auth_enabled")
            and cluster is not None
            and target_traits(cluster.backend).on_this_host
        ):
            self.add_error("token_auth_enabled", "Token auth is Azure's: the local target uses keys.")
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
                self.add_error(
                    "autoscale_min_replicas", f"Autoscale minimum ({low}) is above the maximum ({high})."
                )
            if cluster is not None and not target_traits(cluster.backend).autoscale:
                self.add_error(
                    "autoscale_enabled",
                    f"{target_traits(cluster.backend).label} runs a fixed number of replicas here: "
                    "switch autoscale off.",
                )
        return data

    def config(self) -> dict:
        """The deployment settings, as the services take them; blank batch settings keep their defaults."""
        config = {}
        for field in CONFIG_FIELDS:
            value = self.cleaned_data.get(field)
            config[field] = self.fields[field].initial if value is None else value
        return config


class DeploymentForm(ServiceConfigForm):
    name = forms.CharField(max_length=32, validators=[service_name_rule])
    cluster = forms.ModelChoiceField(queryset=Cluster.objects.none())

    field_order = ["name", "cluster", "model"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        clusters = self.fields["cluster"]
        assert isinstance(clusters, forms.ModelChoiceField)  # the field declared above
        clusters.queryset = Cluster.objects.filter(provisioning_state=ProvisioningState.SUCCEEDED)
        if not self.is_bound:
            self.initial.setdefault("entry_script", default_entry_script())
            self.initial.setdefault("environment_yaml", default_environment_yaml())
            self.initial.setdefault("model", RegisteredModel.objects.order_by("-created_at").first())
            self.initial.setdefault("cluster", clusters.queryset.first())

    def _cluster(self) -> Cluster | None:
        return self.cleaned_data.get("cluster")

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if Deployment.objects.filter(name=name).exclude(state=ServiceState.DELETED).exists():
            raise forms.ValidationError(f"A deployment named {name} already exists.")
        return name


class DeploymentUpdateForm(ServiceConfigForm):
    """A live deployment's configuration, prefilled with what it runs now."""

    def __init__(self, *args, deployment: Deployment, **kwargs) -> None:
        self.deployment = deployment
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.initial.update(
                model=deployment.model_id,
                entry_script=deployment.entry_script,
                environment_yaml=deployment.environment_yaml,
                **{field: getattr(deployment, field) for field in self.config_fields},
            )
            self._mark_switched_fields()  # again: the switches' initial values are the deployment's

    config_fields = CONFIG_FIELDS

    canary_percent = forms.IntegerField(
        required=False,
        initial=100,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        label="Traffic to the new revision at first (%)",
        help_text=(
            "100: all traffic moves once the new revision is ready, and the old one is removed. Below 100: "
            "the new revision serves that share beside the current one (a canary) until you complete or "
            "roll it back from the deployment's page."
        ),
    )

    def _cluster(self) -> Cluster | None:
        return self.deployment.cluster

    def _kept_value(self, field: str) -> Any:
        # Autoscale switched off keeps the deployment's range for when it is switched on again. A GPU count
        # switched off is the default, 0: a count without the GPU is refused.
        return super()._kept_value(field) if field == "gpu_cores" else getattr(self.deployment, field)

    def clean_canary_percent(self) -> int:
        percent = self.cleaned_data.get("canary_percent") or 100
        if percent != 100 and not target_traits(self.deployment.cluster.backend).traffic_split:
            raise forms.ValidationError(
                f"{self.deployment.cluster.get_backend_display()} replaces replicas in place: "
                "it has no canary."
            )
        return percent


class MoveForm(IdempotentForm):
    """Deploy a deployment's current revision to a cluster of another cloud target (Azure ML v1 to v2)."""

    cluster = forms.ModelChoiceField(queryset=Cluster.objects.none(), label="To", empty_label=None)
    name = forms.CharField(
        max_length=32, validators=[service_name_rule], help_text="The new deployment's (and endpoint's) name."
    )

    def __init__(self, *args, deployment: Deployment, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.deployment = deployment
        clusters = self.fields["cluster"]
        assert isinstance(clusters, forms.ModelChoiceField)  # the field declared above
        elsewhere = [
            kind
            for kind in settings.LYNX_TARGETS
            if kind != deployment.cluster.backend and not target_traits(kind).on_this_host
        ]
        clusters.queryset = Cluster.objects.filter(
            provisioning_state=ProvisioningState.SUCCEEDED, backend__in=elsewhere
        ).order_by("name")
        if not self.is_bound:
            self.initial.setdefault("name", f"{deployment.name[:29]}-v2")

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if Deployment.objects.filter(name=name).exclude(state=ServiceState.DELETED).exists():
            raise forms.ValidationError(f"A deployment named {name} already exists.")
        return name

    def destinations(self) -> list[Cluster]:
        """The clusters it can move to (one query)."""
        field = self.fields["cluster"]
        assert isinstance(field, forms.ModelChoiceField) and field.queryset is not None
        return list(field.queryset)


class ModelUploadForm(forms.Form):
    name = forms.CharField(
        max_length=64, validators=[model_name_rule], help_text="The same name again adds a version."
    )
    archive = forms.FileField(
        label="SavedModel archive (.zip or .tar.gz)",
        widget=forms.ClearableFileInput(
            attrs={"accept": ".zip,.tar.gz,.tgz,application/zip,application/gzip"}
        ),
    )
    labels = forms.FileField(required=False, label="Labels (optional: one class name per line)")
    description = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 3}))

    def clean_labels(self):
        labels = self.cleaned_data.get("labels")
        # The upload stops being stored at the limit (views/uploads.py); its size says how far it went.
        if labels and labels.size > LABELS_MAX_BYTES:
            raise forms.ValidationError(
                f"The labels file is over {LABELS_MAX_BYTES // 1024} KiB; it should be one name per line."
            )
        return labels


class TestScoringForm(forms.Form):
    image = forms.FileField(
        label="Image (JPEG or PNG, up to 10 MB)",
        widget=forms.ClearableFileInput(attrs={"accept": "image/jpeg,image/png"}),
        error_messages={"required": "Choose a JPEG or PNG image to score."},
    )


class KeyForm(forms.Form):
    key = forms.ChoiceField(choices=[("Primary", "Primary"), ("Secondary", "Secondary")])
    idempotency_key = forms.CharField(required=False, max_length=64, widget=forms.HiddenInput)


class ConfirmForm(IdempotentForm):
    """A delete button: POST with CSRF token and an idempotency key."""


class RollbackForm(IdempotentForm):
    revision = forms.IntegerField(min_value=1)
