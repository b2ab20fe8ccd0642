"""The ``wavenet-dilated`` command line: one module per command."""

from .main import build_parser, cli

__all__ = ["build_parser", "cli"]
