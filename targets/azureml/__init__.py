"""The Azure ML target: workspaces, AKS clusters and web services, with its pages.

Three targets live here: `azureml` (AKS web services through azureml-core, SDK v1: `v1/`), `azureml_managed`
(managed online endpoints through azure-ai-ml, SDK v2: `v2/`, registered by `managed/backend.py`) and
`azureml_k8s` (Kubernetes online endpoints on an attached AKS cluster, v2: `kubernetes/backend.py`). `v1/` and
`v2/` are the only code that imports Azure's SDKs; the rest are the Azure pages (views, forms, urls,
selectors, templates) and the Azure work a worker does (`services/`: connection tests, the sync).
"""

KIND = "azureml"  # its key in settings.LYNX_TARGETS and in Cluster.backend
MANAGED_KIND = "azureml_managed"
KUBERNETES_KIND = "azureml_k8s"
KINDS = (KIND, MANAGED_KIND, KUBERNETES_KIND)
