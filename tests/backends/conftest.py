"""The Azure emulator must run before azureml is imported: start it while pytest loads this file."""

from tests.azure_emulator.fixtures import azure_emulator, azure_emulator_session, process_emulator

process_emulator()

__all__ = ["azure_emulator", "azure_emulator_session"]
