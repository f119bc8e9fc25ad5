from django.apps import AppConfig


class AzureMLConfig(AppConfig):
    name = "targets.azureml"
    label = "azureml_target"
    verbose_name = "Azure ML target"

    def ready(self) -> None:
        # Models and what imports them load once the app registry is ready (Django's rule for apps.py).
        from deployments.models import OperationKind
        from deployments.services.operations import operation_handler_register

        from .services.steps import workspace_test_failed, workspace_test_step

        operation_handler_register(OperationKind.WORKSPACE_TEST, workspace_test_step, workspace_test_failed)
