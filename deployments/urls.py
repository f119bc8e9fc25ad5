from django.urls import path

from deployments import views

urlpatterns = [
    path("clusters/new/", views.cluster_new, name="cluster_new"),
    path("clusters/<int:pk>/", views.cluster_detail, name="cluster_detail"),
    path("clusters/<int:pk>/delete/", views.cluster_delete_view, name="cluster_delete"),
    path("deployments/new/", views.deployment_new, name="deployment_new"),
    path("deployments/<int:pk>/", views.deployment_detail, name="deployment_detail"),
    path("deployments/<int:pk>/status/", views.deployment_status, name="deployment_status"),
    path("deployments/<int:pk>/delete/", views.deployment_delete_view, name="deployment_delete"),
    path("operations/", views.operation_list, name="operation_list"),
    path("operations/<int:pk>/", views.operation_detail, name="operation_detail"),
    path("operations/<int:pk>/progress/", views.operation_progress, name="operation_progress"),
    path("models/", views.model_list, name="model_list"),
]
