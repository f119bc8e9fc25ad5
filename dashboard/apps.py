from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "dashboard"

    def ready(self) -> None:
        # Role changes made anywhere (Django's admin, a shell) are audited: see dashboard/signals.py.
        from dashboard import signals

        signals.connect()
