"""ACME's keyrouter handlers."""
