"""The dashboard's URLs plus the Azure pages, until dashboard/urls.py includes deployments.urls_azure."""

from django.urls import include, path

from dashboard.urls import urlpatterns as dashboard_urlpatterns

urlpatterns = [path("", include("deployments.urls_azure")), *dashboard_urlpatterns]
