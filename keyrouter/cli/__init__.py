"""The `keyrouter` command: one module per command group, under one error layer (cli.errors)."""

from keyrouter.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
