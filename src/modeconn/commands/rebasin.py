"""Commands of the rebasin family."""

from __future__ import annotations


def register(command) -> None:
    pass
