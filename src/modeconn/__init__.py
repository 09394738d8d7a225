"""modeconn: a reproducibility workflow for mode connectivity (paths, barriers, populations)."""

__version__ = "0.1.0"
