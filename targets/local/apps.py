from django.apps import AppConfig


class LocalTargetConfig(AppConfig):
    name = "targets.local"
    label = "local_target"
    verbose_name = "Local target"
