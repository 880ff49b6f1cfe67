"""Adapters that plug the service into other frameworks (each an optional extra of its own)."""
