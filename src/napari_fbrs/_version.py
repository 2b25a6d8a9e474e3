"""The package version, defined in this one place (setup.cfg reads it)."""

__version__ = "0.1.0.dev0"
