"""Confirmation pages for the destructive actions, which work without JavaScript.

Each button that deletes, rolls back, shifts traffic or replaces a key is a POST form that JavaScript confirms
in a dialog; without JavaScript the page offers a link here instead (`confirm_link.html`). A page says what
will happen and carries the POST form to the action's own endpoint, which stays the one place that acts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET

from accounts.roles import AuthedRequest, deployer_required
from deployments.backends import target_traits
from deployments.forms import ConfirmForm
from deployments.models import Cluster, Deployment, DeploymentRevision
from deployments.services.deployments import DELETABLE_STATES, KEY_NAMES, UPDATABLE_STATES, canary_of
from deployments.states import ProvisioningState, ServiceState


@dataclass(frozen=True)
class Confirmation:
    """What a confirmation page shows: what will happen, and the form that makes it happen."""

    title: str
    consequences: list[str]
    action: str  # the POST endpoint that acts
    button: str
    cancel: str
    fields: list[tuple[str, str]] = field(default_factory=list)  # hidden inputs beside the idempotency key
    rows: list[Deployment] = field(default_factory=list)  # the deployments it acts on, when several


def confirm_render(request: AuthedRequest, confirmation: Confirmation) -> HttpResponse:
    return render(
        request, "deployments/confirm_action.html", {"confirm": confirmation, "form": ConfirmForm()}
    )


def _deployment(pk: int) -> Deployment:
    return get_object_or_404(Deployment.objects.select_related("cluster__workspace", "model"), pk=pk)


def _page(deployment: Deployment, anchor: str = "") -> str:
    return reverse("deployment_detail", args=[deployment.pk]) + anchor


def _gone(request: AuthedRequest, deployment: Deployment) -> HttpResponse | None:
    """Back to the deployment's page, saying why, when it is already going or gone."""
    if deployment.state in (ServiceState.DELETING, ServiceState.DELETED):
        messages.error(request, f"{deployment.name} is already {deployment.state.lower()}.")
        return redirect(_page(deployment))
    return None


def _stops_answering(deployment: Deployment) -> str:
    where = f" at {deployment.scoring_uri}" if deployment.scoring_uri else ""
    return f"{deployment.name} stops answering{where}: clients calling it get errors from then on."


@require_GET
@deployer_required
def deployment_delete_confirm(request: AuthedRequest, pk: int) -> HttpResponse:
    deployment = _deployment(pk)
    if gone := _gone(request, deployment):
        return gone
    if target_traits(deployment.cluster.backend).on_this_host:
        runs = "Its replicas on this machine are stopped and its port is freed."
    else:
        runs = f"Its service in Azure ({deployment.cluster.name}) is deleted, which ends what it bills."
    return confirm_render(
        request,
        Confirmation(
            title=f"Delete deployment {deployment.name}?",
            consequences=[
                _stops_answering(deployment),
                runs,
                "Its keys stop working. Its record, revisions and history stay in Lynx.",
            ],
            action=reverse("deployment_delete", args=[deployment.pk]),
            button="Delete deployment",
            cancel=_page(deployment),
        ),
    )


def _config_text(revision: DeploymentRevision) -> str:
    config = revision.config
    gpu = f"GPU on ({config.get('gpu_cores')})" if config.get("gpu_enabled") else "GPU off"
    return (
        f"model {revision.model.name}:{revision.model.version}, {config.get('replicas')} "
        f"replica{'s' if config.get('replicas') != 1 else ''}, {config.get('cpu_cores')} CPU · "
        f"{config.get('memory_gb')} GB, {gpu}"
    )


@require_GET
@deployer_required
def deployment_rollback_confirm(request: AuthedRequest, pk: int) -> HttpResponse:
    """?revision=N: roll the deployment back to revision N's configuration."""
    deployment = _deployment(pk)
    history = _page(deployment, "#history")
    number = request.GET.get("revision", "")
    revision = (
        deployment.revisions.select_related("model").filter(number=int(number)).first()
        if number.isdigit()
        else None
    )
    if revision is None:
        messages.error(request, f"{deployment.name} has no revision {number or '(none chosen)'}.")
        return redirect(history)
    if revision.number == deployment.revision:
        messages.error(request, f"Revision {revision.number} is what {deployment.name} runs now.")
        return redirect(history)
    if deployment.state not in UPDATABLE_STATES:
        messages.error(request, f"{deployment.name} is {deployment.state}: it cannot be rolled back now.")
        return redirect(history)
    newest = deployment.revisions.order_by("-number").values_list("number", flat=True).first() or 0
    return confirm_render(
        request,
        Confirmation(
            title=f"Roll {deployment.name} back to revision {revision.number}?",
            consequences=[
                f"{deployment.name} is deployed again with revision {revision.number}'s configuration: "
                f"{_config_text(revision)}.",
                f"That becomes revision {newest + 1}, labelled as a rollback; revision "
                f"{deployment.revision}, which runs now, stays in the history and can be rolled back to.",
                "While it rolls out, the deployment is Transitioning; a failed rollout is shown on its page.",
            ],
            action=reverse("deployment_rollback", args=[deployment.pk]),
            button=f"Roll back to revision {revision.number}",
            cancel=history,
            fields=[("revision", str(revision.number))],
        ),
    )


@require_GET
@deployer_required
def deployment_traffic_confirm(request: AuthedRequest, pk: int) -> HttpResponse:
    """?action=complete (all traffic to the canary) or ?action=rollback (all back to the revision before)."""
    deployment = _deployment(pk)
    action = request.GET.get("action", "")
    canary = canary_of(deployment) if target_traits(deployment.cluster.backend).traffic_split else None
    if canary is None or deployment.state != ServiceState.HEALTHY or action not in ("complete", "rollback"):
        messages.error(request, f"{deployment.name} has no canary to complete or roll back.")
        return redirect(_page(deployment))
    share, previous = canary
    if action == "complete":
        title = f"Give revision {deployment.revision} of {deployment.name} all the traffic?"
        consequences = [
            f"Revision {deployment.revision} gets 100 % of the requests (it gets {share} % now).",
            f"Revision {previous} is removed, so it stops billing; going back to it later is a new rollout.",
        ]
        button = f"Complete: 100 % to revision {deployment.revision}"
    else:
        title = f"Roll {deployment.name} back to revision {previous}?"
        consequences = [
            f"Revision {previous} gets all the requests back (it gets {100 - share} % now).",
            f"Revision {deployment.revision} is removed, and revision {previous}'s configuration becomes the "
            "deployment's again.",
        ]
        button = f"Roll back to revision {previous}"
    return confirm_render(
        request,
        Confirmation(
            title=title,
            consequences=consequences,
            action=reverse("deployment_traffic", args=[deployment.pk]),
            button=button,
            cancel=_page(deployment),
            fields=[("action", action)],
        ),
    )


@require_GET
@deployer_required
def key_regenerate_confirm(request: AuthedRequest, pk: int) -> HttpResponse:
    """?key=Primary or ?key=Secondary."""
    deployment = _deployment(pk)
    key = request.GET.get("key", "")
    if key not in KEY_NAMES:
        messages.error(request, "Choose the Primary or the Secondary key to regenerate.")
        return redirect(_page(deployment, "#keys"))
    if gone := _gone(request, deployment):
        return gone
    other = "Secondary" if key == "Primary" else "Primary"
    return confirm_render(
        request,
        Confirmation(
            title=f"Regenerate the {key.lower()} key of {deployment.name}?",
            consequences=[
                f"The {key.lower()} key is replaced by a new one: a client sending the old one is refused "
                "from then on.",
                f"The {other.lower()} key keeps working: move clients to it first if they must not stop.",
                "The new key is shown masked on the deployment's page; reveal it there (that is recorded).",
            ],
            action=reverse("deployment_key_regenerate", args=[deployment.pk]),
            button=f"Regenerate {key.lower()}",
            cancel=_page(deployment, "#keys"),
            fields=[("key", key)],
        ),
    )


@require_GET
@deployer_required
def cluster_delete_confirm(request: AuthedRequest, pk: int) -> HttpResponse:
    """Delete a cluster, with its deployments when it has any: one page listing them."""
    cluster = get_object_or_404(Cluster.objects.select_related("workspace"), pk=pk)
    page = reverse("cluster_detail", args=[cluster.pk])
    if cluster.provisioning_state in (ProvisioningState.DELETING, ProvisioningState.DELETED):
        messages.error(request, f"{cluster.name} is already {cluster.provisioning_state.lower()}.")
        return redirect(page)
    rows = list(
        cluster.deployments.exclude(state=ServiceState.DELETED)
        .select_related("model", "owner")
        .order_by("name")
    )
    if target_traits(cluster.backend).on_this_host:
        itself = f"{cluster.name} is deleted: nothing runs on it any more."
    else:
        # What Azure does differs by target (delete, detach, or nothing to delete): say what is true of all.
        itself = (
            f"{cluster.name} is deleted: in Azure, a compute Lynx created is deleted and one it attached "
            "is detached (that AKS cluster stays, and bills)."
        )
    if not rows:
        return confirm_render(
            request,
            Confirmation(
                title=f"Delete cluster {cluster.name}?",
                consequences=[itself],
                action=reverse("cluster_delete", args=[cluster.pk]),
                button="Delete cluster",
                cancel=page,
            ),
        )
    others = sorted({d.owner.get_username() for d in rows if d.owner and d.owner != request.user})
    plural = "s" if len(rows) != 1 else ""
    consequences = [
        f"{'This deployment is' if len(rows) == 1 else f'These {len(rows)} deployments are'} deleted first, "
        "each as its own operation in the history: clients calling them get errors from then on.",
        f"Then {itself} Lynx's expiry check does that within a minute of the last deployment going.",
    ]
    if others:
        consequences.append(f"Some of them belong to someone else: {', '.join(others)}.")
    return confirm_render(
        request,
        Confirmation(
            title=f"Delete cluster {cluster.name} and its {len(rows)} deployment{plural}?",
            consequences=consequences,
            action=reverse("cluster_teardown", args=[cluster.pk]),
            button=f"Delete {cluster.name} and its deployments",
            cancel=page,
            fields=[("deployments", str(d.pk)) for d in rows if d.state in DELETABLE_STATES],
            rows=rows,
        ),
    )
