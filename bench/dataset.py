"""A big team's history, bulk-created: people, clusters, models, deployments (most of them deleted long ago),
their revisions and operations, and the audit log. Used by `make bench` (10,000 deployments, 200,000 audit
events) and by the query-count test (a few dozen, then three times as many).

One deployment, `busy`, gets a long history of its own (operations, revisions, test-scoring runs, audit
events): its page is the one measured.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from deployments.crypto import encrypt
from deployments.models import (
    AuditEvent,
    Cluster,
    Deployment,
    DeploymentRevision,
    Operation,
    OperationKind,
    RegisteredModel,
    ScoringRun,
    Workspace,
)
from deployments.states import OperationState, ProvisioningState, ServiceState

BATCH = 2000
ACTIONS = (
    "deployment.create",
    "deployment.state",
    "deployment.update",
    "deployment.delete",
    "deployment.test_score",
    "deployment.key_regenerate",
    "cluster.create",
    "cluster.state",
    "cluster.delete",
    "model.register",
)
LIVE_SHARE = 0.2  # a fifth of the deployments still run; the rest were deleted
SCRIPT = "def init():\n    pass\n\n\ndef run(raw_data):\n    return {}\n"
ENVIRONMENT = "name: bench\ndependencies:\n  - python=3.11\n"


@dataclass
class Dataset:
    busy: Deployment  # the deployment with a long history of its own
    person: str  # a username that appears in the audit log (for the filtered page)
    cluster: Cluster  # a live local cluster (deploy POSTs go there)
    model: RegisteredModel


def populate(
    *,
    deployments: int,
    audit_events: int,
    people: int = 50,
    clusters: int = 40,
    models: int = 5,
    busy_history: int = 40,
    prefix: str = "b",
    seed: int = 1,
) -> Dataset:
    """Add the rows (names start with `prefix`, so a second call adds more without clashing)."""
    rng = random.Random(seed)
    now = timezone.now()
    users = get_user_model()
    team = Group.objects.get_or_create(name=f"{prefix}-team")[0]
    people_rows = users.objects.bulk_create(
        [users(username=f"{prefix}-person-{i}", email=f"{prefix}{i}@example.com") for i in range(people)]
    )
    team.user_set.add(*people_rows[: people // 2])
    workspace = Workspace.objects.create(
        name=f"{prefix}-ws",
        subscription_id="00000000-0000-0000-0000-000000000000",
        resource_group="rg",
        workspace_name="ws",
        tenant_id="t",
        client_id="c",
        client_secret_encrypted=encrypt("secret"),
    )
    cluster_rows = []
    for i in range(clusters):
        azure = i % 4 == 3
        cluster_rows.append(
            Cluster(
                name=f"{prefix}c{i}"[:16],
                backend="azureml" if azure else "local",
                workspace=workspace if azure else None,
                vm_size="Standard_NC6s_v3" if azure else "local",
                node_count=1 + i % 3,
                provisioning_state=ProvisioningState.SUCCEEDED,
                owner=rng.choice(people_rows),
                created_at=now - timedelta(days=rng.uniform(1, 90)),
                gpu_count=1 if azure else 0,
                gpu_kind="Tesla V100" if azure else "",
            )
        )
    cluster_rows = Cluster.objects.bulk_create(cluster_rows)
    local = [c for c in cluster_rows if c.backend == "local"]
    model_rows = RegisteredModel.objects.bulk_create(
        [
            RegisteredModel(
                name=f"{prefix}-model-{i}",
                version=1,
                path=f"{prefix}-model-{i}/1/{prefix}-model-{i}",
                labels="a\nb\nc",
            )
            for i in range(models)
        ]
    )

    live_states = (ServiceState.HEALTHY,) * 8 + (ServiceState.UNHEALTHY, ServiceState.TRANSITIONING)
    rows = []
    for i in range(deployments):
        created = now - timedelta(days=rng.uniform(0, 90))
        live = i < deployments * LIVE_SHARE
        rows.append(
            Deployment(
                name=f"{prefix}-svc-{i}",
                cluster=rng.choice(cluster_rows),
                model=rng.choice(model_rows),
                entry_script=SCRIPT,
                environment_yaml=ENVIRONMENT,
                owner=rng.choice(people_rows),
                state=rng.choice(live_states) if live else ServiceState.DELETED,
                created_at=created,
                state_changed_at=created,
                deleted_at=None if live else created + timedelta(hours=rng.uniform(1, 48)),
                scoring_uri=f"http://127.0.0.1:1/{i}/score" if live else "",
                stats={"requests": rng.randint(0, 10_000), "avg_batch_size": round(rng.uniform(1, 16), 2)}
                if live
                else {},
            )
        )
    # The busy one: live, local, first in no particular order.
    rows[0].cluster, rows[0].state, rows[0].deleted_at = local[0], ServiceState.HEALTHY, None
    with transaction.atomic():
        deployment_rows = Deployment.objects.bulk_create(rows, batch_size=BATCH)
        DeploymentRevision.objects.bulk_create(
            [
                DeploymentRevision(
                    deployment=d,
                    number=1,
                    model=d.model,
                    entry_script=SCRIPT,
                    environment_yaml=ENVIRONMENT,
                    config={"replicas": 1},
                    created_by_name="bench",
                    created_at=d.created_at,
                )
                for d in deployment_rows
            ],
            batch_size=BATCH,
        )
        Operation.objects.bulk_create(
            [
                Operation(
                    kind=OperationKind.SERVICE_DEPLOY,
                    cluster=d.cluster,
                    deployment=d,
                    resource_name=d.name,
                    requested_by_name="bench",
                    state=OperationState.SUCCEEDED,
                    phase="done",
                    progress=100,
                    created_at=d.created_at,
                    finished_at=d.created_at + timedelta(seconds=9),
                )
                for d in deployment_rows
            ],
            batch_size=BATCH,
        )

        busy = deployment_rows[0]
        history = [now - timedelta(hours=h) for h in range(busy_history, 0, -1)]
        Operation.objects.bulk_create(
            [
                Operation(
                    kind=OperationKind.SERVICE_UPDATE,
                    cluster=busy.cluster,
                    deployment=busy,
                    resource_name=busy.name,
                    requested_by=rng.choice(people_rows),
                    requested_by_name="bench",
                    state=OperationState.SUCCEEDED,
                    phase="done",
                    progress=100,
                    created_at=at,
                    finished_at=at + timedelta(seconds=20),
                )
                for at in history
            ]
        )
        DeploymentRevision.objects.bulk_create(
            [
                DeploymentRevision(
                    deployment=busy,
                    number=n + 2,
                    model=rng.choice(model_rows),
                    entry_script=SCRIPT,
                    environment_yaml=ENVIRONMENT,
                    config={"replicas": 1 + n % 3},
                    created_by=rng.choice(people_rows),
                    created_by_name="bench",
                    created_at=at,
                )
                for n, at in enumerate(history)
            ]
        )
        ScoringRun.objects.bulk_create(
            [
                ScoringRun(
                    deployment=busy,
                    user=rng.choice(people_rows),
                    user_name="bench",
                    created_at=at,
                    image_name="cat.jpg",
                    image_format="JPEG",
                    status_code=200,
                    latency_ms=40.0,
                    top_classes=[{"label": "a", "probability": 0.9, "class": 0}],
                    response_excerpt="{}",
                )
                for at in history
            ]
        )

        names = [p.username for p in people_rows] + ["system"]
        events = []
        for i in range(audit_events):
            # A tenth of the log is about the busy deployment's neighbours; the busy one gets its own share.
            target = (
                busy if i % max(1, audit_events // (busy_history * 5)) == 0 else rng.choice(deployment_rows)
            )
            action = rng.choice(ACTIONS)
            kind = action.split(".")[0]
            resource_id, resource_name = target.pk, target.name
            if kind != "deployment":
                resource_id, resource_name = rng.randrange(1, 10_000), f"{prefix}-{kind}-{rng.randrange(100)}"
            events.append(
                AuditEvent(
                    created_at=now - timedelta(seconds=rng.uniform(0, 90 * 86400)),
                    actor_name=rng.choice(names),
                    action=action,
                    resource_type={"model": "registeredmodel"}.get(kind, kind),
                    resource_id=resource_id,
                    resource_name=resource_name,
                    before={"replicas": 1} if action.endswith("update") else {},
                    after={"replicas": 2, "state": "Healthy"} if action.endswith(("update", "state")) else {},
                    message="",
                )
            )
            if len(events) == BATCH:
                AuditEvent.objects.bulk_create(events)
                events = []
        AuditEvent.objects.bulk_create(events)
    return Dataset(busy=busy, person=people_rows[1].username, cluster=local[0], model=model_rows[0])
