"""A local HTTP(S) emulator of the Azure APIs azureml-core uses for the AKS deployment lifecycle."""

from .emulator import AzureEmulator

__all__ = ["AzureEmulator"]
