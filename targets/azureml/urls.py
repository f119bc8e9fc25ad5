"""URLs of the Azure pages; lynx/urls.py includes them at the root."""

from django.urls import path

from targets.azureml import views

urlpatterns = [
    path("workspaces/", views.workspace_list, name="workspace_list"),
    path("workspaces/new/", views.workspace_new, name="workspace_new"),
    path("workspaces/<int:pk>/", views.workspace_detail, name="workspace_detail"),
    path("workspaces/<int:pk>/test/", views.workspace_test_view, name="workspace_test"),
    path("workspaces/<int:pk>/secret/", views.workspace_secret_view, name="workspace_secret"),
    path("workspaces/<int:pk>/sync/", views.workspace_sync_view, name="workspace_sync"),
    path("clusters/new/azure/managed/", views.azure_managed_new, name="azure_managed_new"),
    path("clusters/new/azure/kubernetes/", views.azure_kubernetes_new, name="azure_kubernetes_new"),
    path("clusters/new/azure/", views.azure_cluster_new, name="azure_cluster_new"),
    path("clusters/<int:pk>/azure/", views.azure_cluster, name="azure_cluster"),
    path("clusters/<int:pk>/azure/tls/", views.azure_cluster_tls, name="azure_cluster_tls"),
    path("deployments/<int:pk>/azure/", views.azure_deployment, name="azure_deployment"),
    path(
        "deployments/<int:pk>/azure/keys/regenerate/",
        views.azure_key_regenerate,
        name="azure_key_regenerate",
    ),
    path("deployments/<int:pk>/azure/logs/", views.azure_logs, name="azure_logs"),
]
