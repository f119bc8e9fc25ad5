"""The Azure ML target through azure-ai-ml (SDK v2): managed online endpoints.

Like `v1/`, every call starts Azure's work and returns; `observe_*` tells how it goes. A deploy or an update
is staged (`deployments.backends.base.StagedBackend`): the endpoint, then the revision's deployment beside any
live one at 0 % traffic, then the traffic, then removing the revision traffic left. Each stage is one
submission whose reference (the stage and Azure's operation URL, as JSON) the step keeps; nothing waits on a
poller. The SDK's poller still polls in a daemon thread of its own until Azure's operation ends; Lynx never
reads it.

* `client`: signing in as the service principal, MLClient per workspace (the cloud from
  ARM_CLOUD_METADATA_URL, as v1 reads it, so a sovereign cloud or the emulator needs no code);
* `errors`: what azure-ai-ml and azure-core raise, in Azure's words;
* `managed`: `ManagedEndpointBackend`.
"""

from __future__ import annotations

from .managed import ManagedEndpointBackend

__all__ = ["ManagedEndpointBackend"]
