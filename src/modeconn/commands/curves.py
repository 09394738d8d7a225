"""Commands of the curves family."""

from __future__ import annotations


def register(command) -> None:
    pass
