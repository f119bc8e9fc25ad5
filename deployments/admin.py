"""Django's admin, for superusers to inspect rows: read-only, secrets left out.

Every write goes through a service (deployments/services/), which checks the rules, runs the cloud or
process work as an operation and appends an audit event in the same transaction. An admin form would do
none of that, so the admin changes, adds and deletes nothing; the dashboard's pages are where things change.
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from deployments.models import (
    AuditEvent,
    Cluster,
    Deployment,
    ExternalResource,
    Operation,
    RegisteredModel,
    VmPrice,
    VmPriceChange,
    Workspace,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Lists and shows rows; every field read-only, no add, change or delete."""

    def get_readonly_fields(self, request: HttpRequest, obj=None) -> list[str]:
        return [field.name for field in self.model._meta.fields if field.name not in (self.exclude or ())]

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Workspace)
class WorkspaceAdmin(ReadOnlyAdmin):
    list_display = (
        "name",
        "subscription_id",
        "resource_group",
        "workspace_name",
        "last_check_ok",
        "created_at",
    )
    exclude = ("client_secret_encrypted",)


@admin.register(Cluster)
class ClusterAdmin(ReadOnlyAdmin):
    list_display = ("name", "backend", "vm_size", "node_count", "provisioning_state", "owner", "created_at")
    list_filter = ("backend", "provisioning_state")
    search_fields = ("name",)


@admin.register(Deployment)
class DeploymentAdmin(ReadOnlyAdmin):
    list_display = ("name", "cluster", "model", "state", "owner", "created_at")
    list_filter = ("state",)
    search_fields = ("name",)
    exclude = ("primary_key_encrypted", "secondary_key_encrypted")


@admin.register(RegisteredModel)
class RegisteredModelAdmin(ReadOnlyAdmin):
    list_display = ("name", "version", "framework", "registered_by", "created_at")
    search_fields = ("name",)


@admin.register(Operation)
class OperationAdmin(ReadOnlyAdmin):
    list_display = ("kind", "resource_name", "state", "requested_by_name", "created_at")
    list_filter = ("kind", "state")


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "actor_name", "action", "resource_type", "resource_name")
    search_fields = ("actor_name", "action", "resource_name")


@admin.register(ExternalResource)
class ExternalResourceAdmin(ReadOnlyAdmin):
    list_display = ("name", "workspace", "finding", "kind", "vm_size", "node_count", "resolved_at")
    list_filter = ("finding", "kind")


@admin.register(VmPrice)
class VmPriceAdmin(ReadOnlyAdmin):
    list_display = ("vm_size", "price_per_hour", "gpu_count", "gpu_kind", "updated_by", "updated_at")
    search_fields = ("vm_size",)


@admin.register(VmPriceChange)
class VmPriceChangeAdmin(ReadOnlyAdmin):
    list_display = ("price", "price_per_hour", "effective_from", "set_by")
