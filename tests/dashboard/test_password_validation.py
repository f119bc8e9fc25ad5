"""Django's four password validators apply wherever Lynx sets a password: the people page, the admin
account the seed creates from LYNX_ADMIN_PASSWORD, createsuperuser (it calls the same validators)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_the_four_standard_validators_are_on():
    names = {type(v).__name__ for v in password_validation.get_default_password_validators()}
    assert names == {
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    }
    with pytest.raises(ValidationError):
        password_validation.validate_password("12345678")


@pytest.mark.parametrize("password", ["12345678", "password1", "nina.rossi-x"])
def test_the_people_page_refuses_a_weak_password(client, admin_user, password):
    client.force_login(admin_user)
    response = client.post(
        reverse("person_create"),
        {"username": "nina.rossi", "email": "nina.rossi@example.com", "password": password, "role": "viewer"},
    )
    assert response.status_code == 400
    assert not get_user_model().objects.filter(username="nina.rossi").exists()


def test_the_seed_refuses_a_weak_admin_password_in_production(settings, monkeypatch, demo_model):
    settings.PRODUCTION = True
    monkeypatch.setenv("LYNX_ADMIN_PASSWORD", "12345678")
    with pytest.raises(CommandError, match="LYNX_ADMIN_PASSWORD"):
        call_command("lynx_seed")
    assert not get_user_model().objects.filter(username="admin").exists()


def test_the_seed_warns_about_a_weak_admin_password_in_development(settings, monkeypatch, demo_model, capsys):
    settings.PRODUCTION = False
    monkeypatch.setenv("LYNX_ADMIN_PASSWORD", "12345678")
    call_command("lynx_seed")
    err = capsys.readouterr().err
    assert "LYNX_ADMIN_PASSWORD" in err and "weak" in err
    assert get_user_model().objects.get(username="admin").check_password("12345678")


def test_the_seed_takes_a_strong_admin_password_quietly(settings, monkeypatch, demo_model, capsys):
    settings.PRODUCTION = True
    monkeypatch.setenv("LYNX_ADMIN_PASSWORD", "Umber-Falcon-Lattice-42")
    call_command("lynx_seed")
    assert "weak" not in capsys.readouterr().err
    assert get_user_model().objects.get(username="admin").check_password("Umber-Falcon-Lattice-42")
