"""A local HTTP(S) emulator of the Azure APIs azureml-core uses for the AKS deployment lifecycle."""

from .emulator import AzureEmulator, default_scorer

__all__ = ["AzureEmulator", "default_scorer"]
