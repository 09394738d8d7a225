"""Commands of the neb family."""

from __future__ import annotations


def register(command) -> None:
    pass
