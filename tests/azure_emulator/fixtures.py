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
from .lifecycle import remove_service

# Test-only: no sleeping between the SDK's own retries of 429/500/503 (read at azureml import).
FAST_RETRY_ENV = {
    "AZUREML_DEFAULT_BACKOFF": "0",
    "AZUREML_DEFAULT_500_BACKOFF": "0",
    "AZUREML_DEFAULT_503_BACKOFF": "0",
}
# Azure's pace (catalog.PACE) scaled down 2000×: AKS creation's 600 s take 0.3 s, MMS's 1200 s timeout 0.6 s.
# A test that needs a slower step sets the attribute; the fixture restores every paced value after it.
TIME_SCALE = 0.0005

_PROCESS_EMULATOR: AzureEmulator | None = None
_PACED_DEFAULTS: dict[str, float] = {}


def paced_settings(emulator: AzureEmulator) -> dict[str, float]:
    """The emulator's clock settings: its time scale and every `*_seconds` duration derived from it."""
    return {
        name: value
        for name, value in vars(emulator).items()
        if (name == "time_scale" or name.endswith("_seconds")) and isinstance(value, int | float)
    }


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
        emulator = AzureEmulator(time_scale=TIME_SCALE).start()
        _PACED_DEFAULTS.update(paced_settings(emulator))
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
    """The shared emulator; faults armed by a test are disarmed after it, its clock and date restored."""
    emulator = azure_emulator_session
    yield emulator
    # Each scoring host is an inference server process: none outlives the test that deployed it, and its
    # service goes with it (a service without its host would be a state Azure never shows).
    with emulator._lock:
        for service in list(emulator.services.values()):
            remove_service(emulator, service)
    emulator.faults.clear()
    for name, value in _PACED_DEFAULTS.items():
        setattr(emulator, name, value)
    emulator.today = None
    unknown = list(emulator.unknown_requests)
    emulator.unknown_requests.clear()
    assert not unknown, f"the SDK made requests the emulator does not emulate: {unknown}"
