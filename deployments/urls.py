from django.urls import path

from deployments.views import (
    bulk,
    clusters,
    confirm,
    consume,
    deployment_pages,
    keys,
    operations,
    registered_models,
    scoring_runs,
)

urlpatterns = [
    path("clusters/new/", clusters.cluster_new, name="cluster_new"),
    path("clusters/<int:pk>/", clusters.cluster_detail, name="cluster_detail"),
    path("clusters/<int:pk>/delete/", clusters.cluster_delete_view, name="cluster_delete"),
    path("clusters/<int:pk>/delete/confirm/", confirm.cluster_delete_confirm, name="cluster_delete_confirm"),
    path(
        "clusters/<int:pk>/delete/with-deployments/", clusters.cluster_teardown_view, name="cluster_teardown"
    ),
    path("deployments/delete/", bulk.deployments_delete_view, name="deployments_delete"),
    path("deployments/delete/confirm/", bulk.deployments_delete_confirm, name="deployments_delete_confirm"),
    path("deployments/new/", deployment_pages.deployment_new, name="deployment_new"),
    path("deployments/<int:pk>/", deployment_pages.deployment_detail, name="deployment_detail"),
    path("deployments/<int:pk>/status/", deployment_pages.deployment_status, name="deployment_status"),
    path("deployments/<int:pk>/logs/", deployment_pages.deployment_logs_part, name="deployment_logs"),
    path("deployments/<int:pk>/update/", deployment_pages.deployment_update_view, name="deployment_update"),
    path(
        "deployments/<int:pk>/rollback/",
        deployment_pages.deployment_rollback_view,
        name="deployment_rollback",
    ),
    path(
        "deployments/<int:pk>/traffic/", deployment_pages.deployment_traffic_view, name="deployment_traffic"
    ),
    path("deployments/<int:pk>/move/", deployment_pages.deployment_move_view, name="deployment_move"),
    path("deployments/<int:pk>/delete/", deployment_pages.deployment_delete_view, name="deployment_delete"),
    path(
        "deployments/<int:pk>/delete/confirm/",
        confirm.deployment_delete_confirm,
        name="deployment_delete_confirm",
    ),
    path(
        "deployments/<int:pk>/rollback/confirm/",
        confirm.deployment_rollback_confirm,
        name="deployment_rollback_confirm",
    ),
    path(
        "deployments/<int:pk>/traffic/confirm/",
        confirm.deployment_traffic_confirm,
        name="deployment_traffic_confirm",
    ),
    path(
        "deployments/<int:pk>/keys/regenerate/confirm/",
        confirm.key_regenerate_confirm,
        name="deployment_key_regenerate_confirm",
    ),
    path("deployments/<int:pk>/keys/reveal/", keys.key_reveal, name="deployment_key_reveal"),
    path("deployments/<int:pk>/keys/regenerate/", keys.key_regenerate, name="deployment_key_regenerate"),
    path("deployments/<int:pk>/keys/copy/", consume.deployment_key_copy, name="deployment_key_copy"),
    path("deployments/<int:pk>/swagger.json", consume.deployment_swagger, name="deployment_swagger"),
    path("deployments/<int:pk>/api-docs/", consume.deployment_api_docs, name="deployment_api_docs"),
    path("deployments/<int:pk>/test/", scoring_runs.deployment_test, name="deployment_test"),
    path(
        "deployments/<int:pk>/thumbnail.png", scoring_runs.scoring_run_thumbnail, name="scoring_run_thumbnail"
    ),
    path("operations/", operations.operation_list, name="operation_list"),
    path("operations/<int:pk>/", operations.operation_detail, name="operation_detail"),
    path("operations/<int:pk>/progress/", operations.operation_progress, name="operation_progress"),
    path("models/", registered_models.model_list, name="model_list"),
    path("models/new/", registered_models.model_new, name="model_new"),
    path("models/<int:pk>/", registered_models.model_detail, name="model_detail"),
]
