"""Azure ML workspaces an admin connects Lynx to, and the Azure actions that belong to a workspace.

A workspace's client secret is encrypted at rest (`deployments.crypto`, key from LYNX_ENCRYPTION_KEY) the
moment it arrives and is never shown again: pages show the service principal's id, audit rows say that a
secret was set, never what it is. Talking to Azure (testing the connection, reading a service's logs,
replacing one of its keys) is cloud work, so each is an operation a worker runs.
"""

from __future__ import annotations

import re

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction

from deployments.crypto import encrypt
from deployments.models import Deployment, Operation, OperationKind, Workspace
from deployments.services.audit import audit_record
from deployments.services.operations import Refused, operation_by_idempotency_key, operation_start
from deployments.states import ACTIVE_OPERATION_STATES, ServiceState

KEY_NAMES = ("Primary", "Secondary")
LOG_LINES = 200

# Azure's words for a failed sign-in or a refused read, and what the admin should do about each.
_CONNECTION_HINTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"AADSTS7000215|Invalid client secret", re.I),
        "Wrong client secret: Azure AD refused the secret for this service principal. Copy the secret's "
        "value (not its ID) from the app registration's Certificates & secrets page and set it again.",
    ),
    (
        re.compile(r"AADSTS7000222|secret[^.]*expired|expired[^.]*secret", re.I),
        "The client secret has expired: create a new one under the app registration's Certificates & "
        "secrets and set it here.",
    ),
    (
        re.compile(r"AADSTS700016|AADSTS90002|does not know this tenant|tenant.*not found", re.I),
        "Unknown tenant or application: check the tenant ID and the service principal's application "
        "(client) ID.",
    ),
    (
        re.compile(r"Workspace not found|ResourceNotFound|ResourceGroupNotFound", re.I),
        "Workspace not found: check the subscription ID, resource group and workspace name (and that the "
        "service principal can see that subscription).",
    ),
    (
        re.compile(r"AuthorizationFailed|does not have authorization|Forbidden|HTTP 403", re.I),
        "No permission: the service principal signed in but may not read this workspace. Give it the "
        "Contributor role on the workspace (or AzureML Data Scientist plus rights to create and delete "
        "compute).",
    ),
    (
        re.compile(r"could not reach Azure|timed out|HTTP 5\d\d|HTTP 429", re.I),
        "Azure could not be reached or was busy; Lynx retried. Try again in a few minutes.",
    ),
)


def connection_problem(azure_message: str) -> str:
    """A connection test's failure as the admin reads it: what is wrong, then Azure's own words."""
    for pattern, hint in _CONNECTION_HINTS:
        if pattern.search(azure_message):
            return f"{hint} Azure said: {azure_message}"
    return azure_message


def workspace_config(workspace: Workspace) -> dict:
    """What an audit row records about a workspace (never its secret)."""
    return {
        "name": workspace.name,
        "subscription_id": workspace.subscription_id,
        "resource_group": workspace.resource_group,
        "workspace_name": workspace.workspace_name,
        "tenant_id": workspace.tenant_id,
        "client_id": workspace.client_id,
        "location": workspace.location,
    }


def workspace_create(
    *,
    user: User,
    name: str,
    subscription_id: str,
    resource_group: str,
    workspace_name: str,
    tenant_id: str,
    client_id: str,
    client_secret: str,
    location: str = "",
    idempotency_key: str | None = None,
) -> Operation:
    """Record an Azure ML workspace (secret encrypted) and start testing the connection to it.

    Returns the connection test's operation; its page says whether Lynx could sign in and read the workspace.
    """
    if existing := operation_by_idempotency_key(idempotency_key):
        return existing
    if not client_secret:
        raise Refused("The service principal's client secret is required.")
    same = Workspace.objects.filter(
        subscription_id__iexact=subscription_id,
        resource_group__iexact=resource_group,
        workspace_name__iexact=workspace_name,
    ).first()
    if same is not None:
        raise Refused(f"Workspace {workspace_name} in {resource_group} is already connected as {same.name}.")
    try:
        with transaction.atomic():
            workspace = Workspace.objects.create(
                name=name,
                subscription_id=subscription_id,
                resource_group=resource_group,
                workspace_name=workspace_name,
                tenant_id=tenant_id,
                client_id=client_id,
                client_secret_encrypted=encrypt(client_secret),
                location=location,
                created_by=user,
            )
            audit_record(
                actor=user,
                action="workspace.create",
                resource=workspace,
                after={**workspace_config(workspace), "client_secret": "set (encrypted)"},
            )
            return operation_start(
                kind=OperationKind.WORKSPACE_TEST,
                user=user,
                workspace=workspace,
                idempotency_key=idempotency_key,
            )
    except IntegrityError as exc:
        if existing := operation_by_idempotency_key(idempotency_key):
            return existing
        raise Refused(f"A workspace named {name} already exists.") from exc


def workspace_test(*, user: User, workspace: Workspace, idempotency_key: str | None = None) -> Operation:
    """Start a connection test: sign in as the service principal and read the workspace."""
    if existing := operation_by_idempotency_key(idempotency_key):
        return existing
    with transaction.atomic():
        audit_record(actor=user, action="workspace.test_requested", resource=workspace)
        return operation_start(
            kind=OperationKind.WORKSPACE_TEST, user=user, workspace=workspace, idempotency_key=idempotency_key
        )


def workspace_secret_set(
    *, user: User, workspace: Workspace, client_secret: str, idempotency_key: str | None = None
) -> Operation:
    """Replace the service principal's secret (an expired or rotated one) and test the connection with it."""
    if existing := operation_by_idempotency_key(idempotency_key):
        return existing
    if not client_secret:
        raise Refused("Type the new client secret.")
    with transaction.atomic():
        Workspace.objects.filter(pk=workspace.pk).update(client_secret_encrypted=encrypt(client_secret))
        workspace.refresh_from_db()
        audit_record(
            actor=user,
            action="workspace.secret",
            resource=workspace,
            after={"client_secret": "replaced (encrypted)"},
            message="client secret replaced",
        )
        return operation_start(
            kind=OperationKind.WORKSPACE_TEST, user=user, workspace=workspace, idempotency_key=idempotency_key
        )


def _azure_deployment(deployment: Deployment) -> Workspace:
    deployment.refresh_from_db()
    cluster = deployment.cluster
    if cluster.is_local or cluster.workspace is None:  # no workspace_id: None, without a query
        raise Refused(f"{deployment.name} runs on the local target, not on Azure.")
    return cluster.workspace


def deployment_azure_logs_fetch(
    *,
    user: User,
    deployment: Deployment,
    lines: int = LOG_LINES,
    idempotency_key: str | None = None,
) -> Operation:
    """Read an AKS service's logs (`get_logs()`, inference server and storage initializer) in a worker.

    The operation belongs to the workspace rather than the deployment, so logs can be read while the
    deployment is busy (a deployment that will not become Healthy is when they matter most).
    """
    if existing := operation_by_idempotency_key(idempotency_key):
        return existing
    workspace = _azure_deployment(deployment)
    if deployment.state == ServiceState.DELETED:
        raise Refused(f"{deployment.name} is deleted; its logs went with it.")
    running = Operation.objects.filter(
        kind=OperationKind.SERVICE_LOGS,
        state__in=ACTIVE_OPERATION_STATES,
        params__deployment_id=deployment.pk,
    ).first()
    if running is not None:
        return running  # one read at a time is enough
    with transaction.atomic():
        return operation_start(
            kind=OperationKind.SERVICE_LOGS,
            user=user,
            workspace=workspace,
            resource_name=deployment.name,
            params={"deployment_id": deployment.pk, "lines": lines},
            idempotency_key=idempotency_key,
        )
