"""Building a spec reads; the files it names are written once, right before replicas start."""

from __future__ import annotations

import pytest

from deployments.services.specs import service_files_write, service_spec
from tests.deployments.factories import ready_cluster, start_deployment

pytestmark = pytest.mark.django_db


def test_a_spec_names_the_entry_script_without_writing_it_and_the_writer_puts_it_there(
    deployer, demo_model, settings, tmp_path
):
    settings.VAR_DIR = tmp_path
    operation = start_deployment(deployer, ready_cluster(deployer), demo_model, name="spec-reads")
    spec = service_spec(operation.deployment)
    assert spec.entry_script.is_relative_to(tmp_path / "scripts")
    assert not (tmp_path / "scripts").exists()  # a page view or a reconcile pass writes nothing

    service_files_write(operation.deployment)
    assert spec.entry_script.read_text() == operation.deployment.entry_script
    assert (spec.entry_script.parent / "batching.py").is_file()  # the default script imports it on Azure
    assert service_spec(operation.deployment) == spec  # content-addressed: the same script, the same path
