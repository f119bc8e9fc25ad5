"""The Azure ML target: workspaces, AKS clusters and web services, with its pages.

`v1/` is the only code that imports Azure's SDK (azureml-core); the rest are the Azure pages (views, forms,
urls, selectors, templates) and the Azure work a worker does (`services/`: connection tests, the sync).
"""

KIND = "azureml"  # its key in settings.LYNX_TARGETS and in Cluster.backend
