"""Commands of the flatness family."""

from __future__ import annotations


def register(command) -> None:
    pass
