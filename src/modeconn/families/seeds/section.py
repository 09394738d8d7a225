"""Typed config section of the seeds family (schema: schema.yaml beside this file)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SeedsConfig:
    count: int = 4
    first: int = 0
    population: int = 4
    interpolation_points: int = 25

    @property
    def seeds(self) -> list[int]:
        return list(range(self.first, self.first + self.count))


# config section name -> its typed dataclass (read by config.py through the family registry)
SECTIONS = {"seeds": SeedsConfig}
