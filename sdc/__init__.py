"""sdc: find the accelerator chips that silently compute wrong, slow or inconsistent results."""

__version__ = "0.1.0"
