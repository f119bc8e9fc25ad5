"""The Azure ML target: AKS clusters and AKS web services through azureml-core (SDK v1).

Every call starts Azure's work and returns; nothing here waits on a long-running operation
(`wait_for_completion`/`wait_for_deployment` poll without end, and an object fetched afresh has no
operation endpoint to wait on anyway). Callers poll `observe_*` instead. Two SDK calls still block
for a few seconds by design of the SDK: `regen_key` and `Webservice.delete` poll their operation
every 5 s until it ends.

azureml is imported lazily, so importing this package is cheap (it only sets two SDK environment
defaults, below). The SDK reads its cloud definition (`ARM_CLOUD_METADATA_URL`) and its retry/backoff
settings once, when it is first imported. This package is the only code that imports the SDK:

* `errors`: the SDK's exceptions translated into BackendError (Azure's words, transient or not);
* `workspace`: signing in as the service principal and the per-process Workspace cache;
* `sync`: listing compute targets and web services for the periodic sync;
* `clusters`, `services`: the backend's AKS compute and AKS web service calls;
* `backend`: `AzureMLBackend`, the two put together.
"""

from __future__ import annotations

import os

from .backend import AzureMLBackend
from .sync import list_resources
from .workspace import test_connection

__all__ = ["AzureMLBackend", "list_resources", "test_connection"]

# The submodules above import the SDK only inside functions, so these still come first.
# Must be in the environment before azureml.core is first imported (it is read at import time).
os.environ.setdefault("AZUREML_LOG_DEPRECATION_WARNING_ENABLED", "False")
# The SDK sleeps 32/64/128 s between retries of an HTTP 429; Lynx retries transient errors itself.
os.environ.setdefault("AZUREML_DEFAULT_BACKOFF", "2")
