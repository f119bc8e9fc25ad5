"""An uploaded certificate and key are parsed and checked before anything is stored or sent to Azure, and the
key never shows again: not on a page, in an audit row or in an operation's parameters."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from cryptography import x509
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from deployments.crypto import decrypt
from deployments.models import AuditEvent, Operation
from targets.azureml.forms import AzureTlsForm
from tests.targets.azureml.conftest import CPU_SIZE, provision, run_inline, unique
from tests.targets.azureml.tls_material import certificate_pem, key_pem, new_key, valid_pair

CNAME = "scoring.contoso.com"


def tls_form(certificate: str, key: str, cname: str = CNAME) -> AzureTlsForm:
    form = AzureTlsForm(
        {"idempotency_key": unique("k"), "tls_mode": "custom", "tls_cname": cname},
        {
            "tls_certificate": SimpleUploadedFile("cert.pem", certificate.encode()),
            "tls_key": SimpleUploadedFile("key.pem", key.encode()),
        },
    )
    assert form.is_valid(), form.errors
    form.tls = form.clean_tls()  # type: ignore[attr-defined]
    return form


def test_a_matching_current_pair_for_the_cname_is_taken_re_serialised() -> None:
    certificate, key = valid_pair()

    form = tls_form("junk before\n" + certificate + "\njunk after", key)

    assert form.is_valid(), form.errors
    assert form.tls["tls_certificate"] == certificate  # parsed and written back: nothing else kept
    assert x509.load_pem_x509_certificate(form.tls["tls_certificate"].encode())
    assert form.tls["tls_key"].startswith("-----BEGIN PRIVATE KEY-----")


def test_a_wildcard_certificate_covers_one_label_of_the_cname() -> None:
    key = new_key()
    form = tls_form(certificate_pem(key, names=("*.contoso.com",)), key_pem(key))
    assert form.is_valid(), form.errors
    deeper = tls_form(certificate_pem(key, names=("*.contoso.com",)), key_pem(key), "a.scoring.contoso.com")
    assert "for *.contoso.com, not a.scoring.contoso.com" in str(deeper.errors["tls_cname"])


def test_a_certificate_without_sans_is_checked_against_its_common_name() -> None:
    key = new_key()
    assert tls_form(certificate_pem(key, names=()), key_pem(key)).is_valid()
    other = tls_form(certificate_pem(key, names=(), common_name="other.contoso.com"), key_pem(key))
    assert "other.contoso.com" in str(other.errors["tls_cname"])


@pytest.mark.parametrize(
    ("certificate", "field", "message"),
    [
        (
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            "tls_certificate",
            "not a PEM certificate",
        ),
        ("hello", "tls_certificate", "not a PEM certificate"),
    ],
)
def test_something_that_is_not_a_certificate_is_refused(certificate, field, message) -> None:
    _cert, key = valid_pair()
    form = tls_form(certificate, key)
    assert not form.is_valid() and message in str(form.errors[field])


def test_something_that_is_not_a_key_is_refused() -> None:
    certificate, _key = valid_pair()
    form = tls_form(certificate, "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n")
    assert not form.is_valid() and "not a PEM private key" in str(form.errors["tls_key"])


def test_a_key_of_another_certificate_is_refused() -> None:
    certificate, _key = valid_pair()
    _other_certificate, other_key = valid_pair()
    form = tls_form(certificate, other_key)
    assert not form.is_valid() and "does not belong to the certificate" in str(form.errors["tls_key"])


def test_an_expired_certificate_is_refused() -> None:
    key = new_key()
    expired = certificate_pem(key, starts=dt.timedelta(days=-100), lasts=dt.timedelta(days=90))
    form = tls_form(expired, key_pem(key))
    assert not form.is_valid() and "expired on" in str(form.errors["tls_certificate"])


def test_a_certificate_not_valid_yet_is_refused() -> None:
    key = new_key()
    future = certificate_pem(key, starts=dt.timedelta(days=2))
    form = tls_form(future, key_pem(key))
    assert not form.is_valid() and "not valid yet" in str(form.errors["tls_certificate"])


def test_a_certificate_for_another_name_is_refused() -> None:
    certificate, key = valid_pair("api.fabrikam.com")
    form = tls_form(certificate, key)
    assert not form.is_valid()
    assert "The certificate is for api.fabrikam.com, not scoring.contoso.com." in str(
        form.errors["tls_cname"]
    )


def test_a_passphrase_protected_key_is_refused() -> None:
    key = new_key()
    form = tls_form(certificate_pem(key), key_pem(key, passphrase=b"secret"))
    assert not form.is_valid() and "protected by a passphrase" in str(form.errors["tls_key"])


def test_a_private_key_in_the_certificate_field_is_refused_without_quoting_it() -> None:
    certificate, key = valid_pair()
    form = tls_form(certificate + key, key)
    assert not form.is_valid() and "holds a private key" in str(form.errors["tls_certificate"])
    assert key.splitlines()[1] not in str(form.errors)


# --- through the page --------------------------------------------------------------------------------------


def _post_tls(client, cluster, certificate: str, key: str):
    return client.post(
        reverse("azure_cluster_tls", args=[cluster.pk]),
        {
            "idempotency_key": unique("k"),
            "tls_mode": "custom",
            "tls_cname": CNAME,
            "tls_certificate": SimpleUploadedFile("cert.pem", certificate.encode()),
            "tls_key": SimpleUploadedFile("key.pem", key.encode()),
        },
    )


@pytest.mark.django_db
def test_a_refused_pair_changes_nothing(client, deployer, workspace, azure_emulator) -> None:
    cluster = provision(deployer, workspace, vm_size=CPU_SIZE)
    certificate, _key = valid_pair()
    _other, other_key = valid_pair()
    client.force_login(deployer)
    audits = AuditEvent.objects.count()

    response = _post_tls(client, cluster, certificate, other_key)

    assert response.status_code == 400 and "does not belong to the certificate" in response.content.decode()
    cluster.refresh_from_db()
    assert (cluster.tls_mode, cluster.tls_certificate, cluster.tls_key_encrypted) == ("", "", "")
    assert AuditEvent.objects.count() == audits
    assert not Operation.objects.filter(cluster=cluster, kind="cluster_tls").exists()


@pytest.mark.django_db
def test_the_key_never_shows_on_a_page_in_audit_rows_or_operation_params(
    client, deployer, workspace, azure_emulator
) -> None:
    cluster = provision(deployer, workspace, vm_size=CPU_SIZE)
    certificate, key = valid_pair()
    secret_lines = [line for line in key.splitlines() if "-----" not in line]
    client.force_login(deployer)

    response = _post_tls(client, cluster, certificate, key)

    assert response.status_code == 302, response.content.decode()[:2000]
    operation = Operation.objects.get(cluster=cluster, kind="cluster_tls")
    operation = run_inline(operation.pk)
    assert operation.state == "succeeded", operation.error
    cluster.refresh_from_db()
    assert (
        cluster.tls_certificate == certificate and decrypt(cluster.tls_key_encrypted).strip() == key.strip()
    )
    seen = [
        client.get(response["Location"]).content.decode(),
        client.get(reverse("azure_cluster", args=[cluster.pk])).content.decode(),
        json.dumps(operation.params),
        operation.error,
        *(
            json.dumps([event.before, event.after, event.message])
            for event in AuditEvent.objects.filter(resource_name=cluster.name)
        ),
    ]
    for text in seen:
        assert not any(line in text for line in secret_lines)
        assert "PRIVATE KEY" not in text
    assert azure_emulator.computes[cluster.name].ssl.status == "Enabled"
