"""Handlers: the built-ins, one module each, and the registry that resolves names."""
