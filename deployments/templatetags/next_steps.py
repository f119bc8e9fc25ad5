"""What a finished operation offers next: a deploy that succeeded, "Test it"; a cluster, "Deploy to it"; a
failure, "Try again" on the form it came from, prefilled where that is cheap, else the resource's page.

Computed from the operation and the rows the operation page already loads (its deployment and cluster), with
no query of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlencode

from django import template
from django.urls import reverse

from deployments.models import Operation, OperationKind
from deployments.services.deployments import UPDATABLE_STATES
from deployments.states import ProvisioningState, ServiceState

register = template.Library()

SERVICE_CHANGES = (OperationKind.SERVICE_DEPLOY, OperationKind.SERVICE_UPDATE, OperationKind.SERVICE_TRAFFIC)


@dataclass(frozen=True)
class NextStep:
    label: str
    url: str
    primary: bool = False


@dataclass(frozen=True)
class NextSteps:
    """The links for each way the operation can end; the page shows the one it ended with."""

    succeeded: list[NextStep] = field(default_factory=list)
    failed: list[NextStep] = field(default_factory=list)


def _url(name: str, *args: int, query: dict | None = None, anchor: str = "") -> str:
    return reverse(name, args=args) + (f"?{urlencode(query)}" if query else "") + anchor


def _deployment_steps(operation: Operation) -> NextSteps:
    deployment = operation.deployment
    assert deployment is not None
    page = NextStep("Open the deployment", _url("deployment_detail", deployment.pk))
    gone = deployment.state in (ServiceState.DELETING, ServiceState.DELETED)
    if operation.kind == OperationKind.SERVICE_DELETE:
        again = NextStep("Try again", _url("deployment_delete_confirm", deployment.pk), True)
        return NextSteps(
            succeeded=[NextStep("Back to the overview", _url("overview"), True)],
            failed=[page] if gone else [again, page],
        )
    if operation.kind in SERVICE_CHANGES:
        test = [] if gone else [NextStep("Test it", _url("deployment_test", deployment.pk), True)]
        if deployment.state in UPDATABLE_STATES:
            # The update form starts from the configuration that failed; sent unchanged, it deploys it again.
            form = _url("deployment_update", deployment.pk)
        else:
            prefilled = {"cluster": deployment.cluster_id, "model": deployment.model_id}
            form = _url("deployment_new", query=prefilled)
        retry = NextStep("Try again", form, True)
        failed = [page] if operation.kind == OperationKind.SERVICE_TRAFFIC else [retry, page]
        return NextSteps(succeeded=[*test, page], failed=failed)
    if operation.kind == OperationKind.SERVICE_KEY_REGENERATE:
        keys = NextStep("See the keys", _url("deployment_detail", deployment.pk, anchor="#keys"), True)
        key = operation.params.get("key", "")
        confirm = _url("deployment_key_regenerate_confirm", deployment.pk, query={"key": key})
        again = NextStep("Try again", confirm, True)
        return NextSteps(succeeded=[keys], failed=[page] if gone else [again, page])
    return NextSteps(succeeded=[page], failed=[page])


def _cluster_steps(operation: Operation) -> NextSteps:
    cluster = operation.cluster
    assert cluster is not None
    page = NextStep("Open the cluster", _url("cluster_detail", cluster.pk))
    going = cluster.provisioning_state in (ProvisioningState.DELETING, ProvisioningState.DELETED)
    if operation.kind == OperationKind.CLUSTER_PROVISION:
        deploy = NextStep("Deploy to it", _url("deployment_new", query={"cluster": cluster.pk}), True)
        # A failed cluster keeps its name until it is deleted: its page says why it failed and deletes it.
        return NextSteps(succeeded=[deploy, page], failed=[page])
    if operation.kind == OperationKind.CLUSTER_DELETE:
        retry = [] if going else [NextStep("Try again", _url("cluster_delete_confirm", cluster.pk), True)]
        return NextSteps(
            succeeded=[NextStep("Back to the overview", _url("overview"), True)], failed=[*retry, page]
        )
    return NextSteps(succeeded=[page], failed=[page])


@register.simple_tag
def next_steps(operation: Operation) -> NextSteps:
    if operation.deployment_id is not None:
        return _deployment_steps(operation)
    if operation.cluster_id is not None:
        return _cluster_steps(operation)
    if operation.workspace_id is not None:
        page = NextStep("Open the workspace", _url("workspace_detail", operation.workspace_id))
        return NextSteps(succeeded=[page], failed=[page])
    return NextSteps()
