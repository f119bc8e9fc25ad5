from django.contrib import admin

from deployments.models import AuditEvent, Cluster, Deployment, Operation, RegisteredModel


@admin.register(Cluster)
class ClusterAdmin(admin.ModelAdmin):
    list_display = ("name", "backend", "vm_size", "provisioning_state", "owner", "created_at")
    readonly_fields = ("provisioning_state",)


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    list_display = ("name", "cluster", "model", "state", "owner", "created_at")
    exclude = ("primary_key_encrypted", "secondary_key_encrypted")
    readonly_fields = ("state",)


@admin.register(RegisteredModel)
class RegisteredModelAdmin(admin.ModelAdmin):
    list_display = ("name", "version", "framework", "registered_by", "created_at")


@admin.register(Operation)
class OperationAdmin(admin.ModelAdmin):
    list_display = ("kind", "resource_name", "state", "requested_by_name", "created_at")
    readonly_fields = [f.name for f in Operation._meta.fields]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("created_at", "actor_name", "action", "resource_type", "resource_name")

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_add_permission(self, request) -> bool:
        return False
