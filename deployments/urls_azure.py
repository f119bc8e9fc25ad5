"""URLs of the Azure pages; lynx/urls.py includes them at the root."""

from django.urls import path

from deployments import views_azure

urlpatterns = [
    path("workspaces/", views_azure.workspace_list, name="workspace_list"),
    path("workspaces/new/", views_azure.workspace_new, name="workspace_new"),
    path("workspaces/<int:pk>/", views_azure.workspace_detail, name="workspace_detail"),
    path("workspaces/<int:pk>/test/", views_azure.workspace_test_view, name="workspace_test"),
    path("workspaces/<int:pk>/secret/", views_azure.workspace_secret_view, name="workspace_secret"),
    path("workspaces/<int:pk>/sync/", views_azure.workspace_sync_view, name="workspace_sync"),
    path("clusters/new/azure/", views_azure.azure_cluster_new, name="azure_cluster_new"),
    path("deployments/<int:pk>/azure/", views_azure.azure_deployment, name="azure_deployment"),
    path(
        "deployments/<int:pk>/azure/keys/regenerate/",
        views_azure.azure_key_regenerate,
        name="azure_key_regenerate",
    ),
    path("deployments/<int:pk>/azure/logs/", views_azure.azure_logs, name="azure_logs"),
]
