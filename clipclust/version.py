"""The package version, importable from every layer without importing the public face."""

__version__ = "0.1.0"
