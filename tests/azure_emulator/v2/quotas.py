"""`…/locations/{loc}/usages` and `/vmSizes`: what `ml.compute.list_usage()` / `list_sizes()` read.

Usages report each managed-endpoint quota family's dedicated cores (limit and what deployments hold, with
the 20 % upgrade reservation); vmSizes the managed online SKU list with each size's cores, memory and GPUs.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Any

from .. import catalog
from ..http import Request, Response

if TYPE_CHECKING:
    from ..emulator import AzureEmulator


def usages(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    families = sorted({sku.family for sku in catalog.MANAGED_ONLINE_SKUS.values()})
    provider = f"/subscriptions/{emu.subscription_id}/providers/Microsoft.MachineLearningServices"
    base = f"{provider}/locations/{m['location']}"
    value: list[dict[str, Any]] = [
        {
            "id": f"{base}/usages/{family.replace(' ', '')}",
            "amlWorkspaceLocation": m["location"],
            "type": "Microsoft.MachineLearningServices/vmFamily/usages",
            "unit": "Count",
            "currentValue": emu.v2.cores_in_use(family),
            "limit": emu.v2.quota_limit(family),
            "name": {"value": family, "localizedValue": f"{family} Cores"},
        }
        for family in families
    ]
    return Response(200, {"value": value})


def vm_sizes(emu: AzureEmulator, req: Request, m: re.Match[str]) -> Response:
    today = emu.today or dt.date.today()
    value = []
    for sku in catalog.MANAGED_ONLINE_SKUS.values():
        size = catalog.vm_size(sku.name)
        if size is not None and size.is_retired(today):
            continue
        value.append(
            {
                "name": sku.name,
                "family": sku.family,
                "vCPUs": sku.cores,
                "gpus": int(sku.gpus) if sku.gpus >= 1 else (1 if sku.gpus else 0),
                "osVhdSizeMB": 1047552,
                "maxResourceVolumeMB": 0,
                "memoryGB": size.memory_gib if size else None,
                "lowPriorityCapable": False,
                "premiumIO": True,
                "supportedComputeTypes": ["ManagedOnlineEndpoint"],
            }
        )
    return Response(200, {"value": value})
