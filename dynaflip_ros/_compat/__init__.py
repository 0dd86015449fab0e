"""Compatibility shims for the pinned environment."""
