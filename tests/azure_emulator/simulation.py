"""The emulated clock and what the handlers share: state transitions, operations, events, logs.

Mixed into `AzureEmulator`, whose state (computes, services, operations, events) it works on.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from .state import Operation, Service, iso_now


class Simulation:
    """Resources reach their next state when their deadline passes (checked by `tick` on each request)."""

    def tick(self) -> None:
        """Move every resource whose transition deadline has passed to its next state."""
        now = time.monotonic()
        for name, compute in list(self.computes.items()):
            if compute.deadline > now:
                continue
            if compute.provisioning_state in ("Creating", "Updating"):
                if compute.fail_with is not None:
                    compute.provisioning_state, compute.errors = "Failed", [{"error": compute.fail_with}]
                else:
                    compute.provisioning_state = "Succeeded"
                compute.modified_on = iso_now()
            elif compute.provisioning_state == "Deleting":
                del self.computes[name]
        for name, svc in list(self.services.items()):
            if svc.deadline > now:
                continue
            if svc.deleting:
                del self.services[name]
            elif svc.state == "Transitioning":
                svc.state, svc.error = svc.outcome, svc.outcome_error
                svc.updated_time = iso_now()
                svc.log_lines.extend(self.ready_log(svc))
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
                svc = self.services.get(op.target)
                if svc is None or svc.state == "Healthy":
                    op.state = "Succeeded"
                elif svc.state in ("Unschedulable", "Failed", "Unhealthy"):
                    op.state, op.error = "Failed", svc.error
            else:
                op.state = "Succeeded"

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
        from deployments.vm_sizes import vm_size_info

        info = vm_size_info(vm_size)
        return info.vcpus if info else 4

    @staticmethod
    def gpus_per_node(vm_size: str) -> float:
        from deployments.vm_sizes import vm_size_info

        info = vm_size_info(vm_size)
        return info.gpu_count if info else 0

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
        if svc.state != "Healthy":
            return [f"{iso_now()} | Pod scheduling failed: {json.dumps(svc.error)}"]
        gpu = (svc.payload.get("containerResourceRequirements") or {}).get("gpu") or 0
        environment = (svc.payload.get("environmentImageRequest") or {}).get("environment") or {}
        entry_script = (environment.get("environmentVariables") or {}).get("AZUREML_ENTRY_SCRIPT")
        return [
            f"{iso_now()} | Azure ML Inferencing HTTP server v1.5.1",
            f"{iso_now()} | Server Settings --- Entry Script Name: {entry_script}",
            f"{iso_now()} | Booting worker with pid: 42 (GPUs visible: {gpu})",
            f"{iso_now()} | Users's init has completed successfully",
            f"{iso_now()} | Scoring timeout is set to {svc.payload.get('scoringTimeoutMs') or 60000}",
        ]
