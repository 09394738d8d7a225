"""Typed config sections of the method families, one module per family (the core sections are in config.py)."""
