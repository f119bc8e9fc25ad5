"""The emulated clock and what the handlers share: state transitions, operations, events, logs.

Mixed into `AzureEmulator`, whose state (computes, services, operations, events) it works on.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from . import catalog, lifecycle
from .state import Compute, Operation, Service, iso_now


class Simulation:
    """Resources reach their next state when their deadline passes (checked by `tick` on each request)."""

    def tick(self) -> None:
        """Move every resource whose transition deadline has passed to its next state."""
        now = time.monotonic()
        self.tick_computes(now)
        lifecycle.advance_services(self, now)  # service operations are settled there, with their service
        for op in self.operations.values():
            if op.state != "Running" or op.deadline > now:
                continue
            if op.kind == "compute":
                compute = self.computes.get(op.target)
                if compute is None or compute.provisioning_state == "Succeeded":
                    op.state = "Succeeded"  # created, or gone after a delete
                elif compute.provisioning_state == "Failed":
                    op.state, op.error = "Failed", compute.errors[0]["error"]
            elif op.kind == "service":
                if op.operation_type == "Delete" and op.target not in self.services:
                    op.state = "Succeeded"
            else:
                op.state = "Succeeded"

    def tick_computes(self, now: float) -> None:
        """Due computes: Creating/Updating → Succeeded/Failed/Canceled, Deleting → gone."""
        for name, compute in list(self.computes.items()):
            if compute.deadline > now:
                continue
            if compute.provisioning_state in ("Creating", "Updating"):
                self.end_compute_transition(compute)
            elif compute.provisioning_state == "Deleting":
                del self.computes[name]

    def end_compute_transition(self, compute: Compute) -> None:
        failure = dict(compute.fail_with) if compute.fail_with is not None else None
        if failure is not None and failure.pop("status", None) == "Canceled":
            compute.provisioning_state = "Canceled"
            self.settle_compute_operation(compute, "Canceled", failure)
        elif failure is not None:
            compute.provisioning_state, compute.errors = "Failed", [{"error": failure}]
        else:
            compute.provisioning_state = "Succeeded"
        compute.fail_with = None
        compute.modified_on = iso_now()

    def settle_compute_operation(self, compute: Compute, state: str, error: dict[str, Any] | None) -> None:
        """End the compute's running ARM operation now (Canceled is not a state the compute poll infers)."""
        op = self.operations.get(compute.operation_id)
        if op is not None and op.state == "Running":
            op.state, op.error = state, error

    def new_operation(self, kind: str, target: str, seconds: float, operation_type: str = "") -> Operation:
        op = Operation(
            id=str(uuid.uuid4()),
            kind=kind,
            target=target,
            deadline=time.monotonic() + seconds,
            operation_type=operation_type,
        )
        self.operations[op.id] = op
        return op

    def record(self, event: str, **details: Any) -> None:
        self.events.append((event, details))

    # --- helpers used by handlers --------------------------------------------------------------

    @staticmethod
    def vcpus(vm_size: str) -> int:
        """vCPUs per node, from the emulator's own catalogue (0 for a size Azure does not know)."""
        size = catalog.vm_size(vm_size)
        return size.vcpus if size else 0

    @staticmethod
    def gpus_per_node(vm_size: str) -> float:
        """GPUs per node as Azure lists them (fractional for A10 partitions; 0 for CPU or unknown sizes)."""
        size = catalog.vm_size(vm_size)
        return size.gpus if size else 0

    def boot_log(self, svc: Service) -> list[str]:
        env = (svc.payload.get("environmentImageRequest") or {}).get("environment") or {}
        image = (
            (env.get("docker") or {}).get("baseImage")
        ) or "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04"
        return [
            f"{iso_now()} | Pulling image built from {image}",
            f"{iso_now()} | Creating pods for service {svc.name} on compute {svc.payload.get('computeName')}",
        ]

    def ready_log(self, svc: Service) -> list[str]:
        """What Kubernetes says when a revision's pods cannot be scheduled (a running host logs itself)."""
        if svc.state == "Unschedulable":
            return [f"{iso_now()} | Pod scheduling failed: {json.dumps(svc.error)}"]
        return []

    def stop_hosts(self, wait: bool = False) -> None:
        """Stop every scoring host (emulator stop and reset): no process outlives the emulator's state."""
        for svc in list(self.services.values()):
            for host in (svc.host, svc.new_host):
                if host is not None:
                    host.stop(wait=wait)
            svc.host = svc.new_host = None
