"""Demo data for a fresh install: an admin account, the demo model, the roles, the price table."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import Group, User
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from accounts.roles import ROLES
from deployments.models import RegisteredModel
from deployments.services.prices import vm_prices_seed
from deployments.services.registered_models import model_register

DEMO_MODEL_NAME = "digits"


def build_demo_model(out: Path) -> Path:
    """Train and export the demo model once per version of its recipe (in a subprocess: TensorFlow
    stays out of this process); it prints its held-out accuracy."""
    from scoring.demo_model import build_cached

    return build_cached(out)


class Command(BaseCommand):
    help = (
        "Create the admin account (LYNX_ADMIN_PASSWORD or a generated one, printed once), fill the price "
        "table and register the demo model."
    )

    def handle(self, *args, **options) -> None:
        for role in ROLES:
            Group.objects.get_or_create(name=role)
        if added := vm_prices_seed():
            self.stdout.write(f"Filled the price table with {added} VM sizes (East US pay-as-you-go prices).")
        users = get_user_model()
        if not users.objects.filter(username="admin").exists():
            password = os.environ.get("LYNX_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
            self._check_admin_password(password, users(username="admin", email="admin@localhost"))
            users.objects.create_superuser("admin", "admin@localhost", password)
            shown = "from LYNX_ADMIN_PASSWORD" if os.environ.get("LYNX_ADMIN_PASSWORD") else password
            self.stdout.write(
                f"Created the admin account: user admin, password {shown} (shown once; keep it)."
            )
            (settings.VAR_DIR / "admin-created").write_text("")
        if not RegisteredModel.objects.filter(name=DEMO_MODEL_NAME).exists():
            self.stdout.write("Training the demo model (handwritten digits, a few seconds)...")
            built = build_demo_model(settings.VAR_DIR / "cache" / "demo-model")
            model = model_register(
                user=None,
                name=DEMO_MODEL_NAME,
                source_dir=built / "model",
                labels=(built / "labels.txt").read_text(),
                description="A small CNN trained on scikit-learn's handwritten digits; takes JPEG/PNG bytes.",
            )
            self.stdout.write(f"Registered the demo model {model}.")

    def _check_admin_password(self, password: str, user: User) -> None:
        """Django's password validators on LYNX_ADMIN_PASSWORD: production refuses a weak one, a laptop
        warns."""
        try:
            password_validation.validate_password(password, user)
        except ValidationError as exc:
            problem = f"LYNX_ADMIN_PASSWORD is weak: {' '.join(exc.messages)}"
            if settings.PRODUCTION:
                raise CommandError(f"{problem} LYNX_ENV=production refuses it; choose another.") from None
            self.stderr.write(f"Warning: {problem} Fine on a laptop; production would refuse it.")
