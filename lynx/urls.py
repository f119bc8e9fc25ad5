import importlib.util

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from dashboard import views
from dashboard.views import errors


def _has_urls(package: str) -> bool:
    return importlib.util.find_spec(f"{package}.urls") is not None


urlpatterns = [
    path("", views.overview, name="overview"),
    path("healthz", views.healthz, name="healthz"),
    path("favicon.ico", errors.favicon, name="favicon"),
    path("audit/", views.audit_list, name="audit_list"),
    path("audit/export.csv", views.audit_export, name="audit_export"),
    path("prices/", views.price_list, name="price_list"),
    path("prices/new/", views.price_create, name="price_create"),
    path("prices/<int:pk>/", views.price_update, name="price_update"),
    path("people/", views.people, name="people"),
    path("people/new/", views.person_create, name="person_create"),
    path("people/<int:pk>/", views.person_update, name="person_update"),
    path("clusters/<int:pk>/expiry/extend/", views.cluster_expiry_extend_view, name="cluster_expiry_extend"),
    path("clusters/<int:pk>/expiry/cancel/", views.cluster_expiry_cancel_view, name="cluster_expiry_cancel"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("", include("api.urls")),
    path("", include("deployments.urls")),
    # Each target's own pages, if it has any (settings.LYNX_TARGETS).
    *[
        path("", include(f"{package}.urls"))
        for package in settings.LYNX_TARGETS.values()
        if _has_urls(package)
    ],
]

# Error pages in Lynx's layout (templates/403.html, 404.html, 500.html); 405 is dashboard.middleware's.
handler403 = errors.forbidden
handler404 = errors.not_found
handler500 = errors.server_error
