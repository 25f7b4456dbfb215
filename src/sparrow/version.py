"""The package version, in a module of its own so that low layers (and the CLI's ``--version``) can read it."""

__version__ = "0.1.0"
