"""Commands of the instability family."""

from __future__ import annotations


def register(command) -> None:
    pass
