"""pytest fixtures: one emulator per test process, started before azureml is first imported.

The SDK reads `ARM_CLOUD_METADATA_URL` (and its retry settings) once, when azureml is imported, so
every test in a process must share one emulator. Import the fixtures into a conftest:

    from tests.azure_emulator.fixtures import azure_emulator, azure_emulator_session  # noqa: F401
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Iterator

import pytest

from .emulator import AzureEmulator

# Test-only: no sleeping between the SDK's own retries of 429/500/503 (read at azureml import).
FAST_RETRY_ENV = {
    "AZUREML_DEFAULT_BACKOFF": "0",
    "AZUREML_DEFAULT_500_BACKOFF": "0",
    "AZUREML_DEFAULT_503_BACKOFF": "0",
}
TEST_DELAYS = {"cluster_create_seconds": 0.3, "service_deploy_seconds": 0.5, "delete_seconds": 0.2}

_PROCESS_EMULATOR: AzureEmulator | None = None


def process_emulator() -> AzureEmulator:
    """Start the process-wide emulator once and point the SDK at it through the environment."""
    global _PROCESS_EMULATOR
    if _PROCESS_EMULATOR is None:
        if "azureml._vendor.azure_cli_core.cloud" in sys.modules:
            raise RuntimeError(
                "azureml was imported before the Azure emulator started, so the SDK already uses another "
                "cloud "
                "definition. Start the emulator (tests.azure_emulator.fixtures.process_emulator) first."
            )
        emulator = AzureEmulator(**TEST_DELAYS).start()
        os.environ.update(emulator.env())
        os.environ.update(FAST_RETRY_ENV)
        atexit.register(emulator.stop)
        _PROCESS_EMULATOR = emulator
    return _PROCESS_EMULATOR


@pytest.fixture(scope="session")
def azure_emulator_session() -> AzureEmulator:
    return process_emulator()


@pytest.fixture
def azure_emulator(azure_emulator_session: AzureEmulator) -> Iterator[AzureEmulator]:
    """The shared emulator; faults armed by a test are disarmed after it, delays restored."""
    emulator = azure_emulator_session
    yield emulator
    emulator.faults.clear()
    for name, value in TEST_DELAYS.items():
        setattr(emulator, name, value)
    unknown = list(emulator.unknown_requests)
    emulator.unknown_requests.clear()
    assert not unknown, f"the SDK made requests the emulator does not emulate: {unknown}"
