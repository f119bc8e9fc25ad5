from django.apps import AppConfig


class AzureMLConfig(AppConfig):
    name = "targets.azureml"
    label = "azureml_target"
    verbose_name = "Azure ML target"

    def ready(self) -> None:
        # Models and what imports them load once the app registry is ready (Django's rule for apps.py).
        from deployments.models import OperationKind
        from deployments.services.audit import AUDIT_ACTIONS
        from deployments.services.operations import operation_handler_register

        from .services.steps import cluster_tls_step, workspace_test_failed, workspace_test_step

        operation_handler_register(OperationKind.WORKSPACE_TEST, workspace_test_step, workspace_test_failed)
        # A failed TLS update leaves the cluster as it was (Azure keeps serving): nothing to undo here.
        operation_handler_register(OperationKind.CLUSTER_TLS, cluster_tls_step)
        # The Azure target's own audit actions, declared with the rest (the audit filter lists them).
        AUDIT_ACTIONS.setdefault("cluster.tls", "TLS was requested, enabled or renewed on an AKS cluster")
