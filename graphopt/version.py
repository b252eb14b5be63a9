"""The package version (one place; setup.py reads the same number)."""

__version__ = "0.1.0"
