"""Who the caller is, and what Lynx can deploy to."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.http import HttpRequest
from ninja import Router, Schema

from accounts.roles import role_of, teams_of_user
from api.auth import api_user, token_of
from api.schemas import REFUSALS
from deployments.backends import target_traits

router = Router()


class TokenBrief(Schema):
    name: str
    read_only: bool
    expires_at: datetime | None


class MeOut(Schema):
    username: str
    role: str
    teams: list[str]
    token: TokenBrief | None


class TargetOut(Schema):
    kind: str
    label: str
    on_this_host: bool
    cluster_resource: (
        bool  # False: nothing to provision (Azure managed endpoints); a "cluster" is a placement
    )
    autoscale: bool
    traffic_split: bool


@router.get("/me", response={200: MeOut, **REFUSALS}, summary="Who this token acts for")
def me(request: HttpRequest) -> dict:
    user = api_user(request)
    token = token_of(request)
    return {
        "username": user.get_username(),
        "role": role_of(user),
        "teams": teams_of_user(user),
        "token": token,
    }


@router.get("/targets", response={200: list[TargetOut], **REFUSALS}, summary="Where Lynx can deploy")
def targets(request: HttpRequest) -> list[dict]:
    out = []
    for kind in settings.LYNX_TARGETS:
        traits = target_traits(kind)
        out.append(
            {
                "kind": kind,
                "label": traits.label,
                "on_this_host": traits.on_this_host,
                "cluster_resource": traits.cluster_resource,
                "autoscale": traits.autoscale,
                "traffic_split": traits.traffic_split,
            }
        )
    return out
