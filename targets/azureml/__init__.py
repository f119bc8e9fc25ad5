"""The Azure ML target: workspaces, AKS clusters and web services, with its pages.

Two targets live here: `azureml` (AKS web services through azureml-core, SDK v1: `v1/`) and `azureml_managed`
(managed online endpoints through azure-ai-ml, SDK v2: `v2/`, registered by `managed/backend.py`). `v1/` and
`v2/` are the only code that imports Azure's SDKs; the rest are the Azure pages (views, forms, urls,
selectors, templates) and the Azure work a worker does (`services/`: connection tests, the sync).
"""

KIND = "azureml"  # its key in settings.LYNX_TARGETS and in Cluster.backend
MANAGED_KIND = "azureml_managed"
KINDS = (KIND, MANAGED_KIND)
