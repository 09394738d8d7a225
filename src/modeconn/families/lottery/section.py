"""Typed config sections of the lottery family (schema: schema.yaml beside this file)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LotteryConfig:
    """Iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2020).

    The first `seeds` seeds of the seeds family are the dense networks. Level l prunes `fraction`
    of the remaining prunable weights by magnitude (`rule` "global": one ranking over every
    non-output layer; "layerwise": each layer within itself, Frankle & Carbin 2019; the output
    layer always separately at `output_fraction`) of the level l−1 ticket, rewinds the survivors to step `rewind_step` of the
    seed's training and retrains to the end of the seeds' schedule, beside the random-pruning and
    random-reinitialisation baselines and two fork children that measure the ticket's stability.
    """

    seeds: int = 2
    levels: int = 3
    rule: str = "global"
    fraction: float = 0.2
    output_fraction: float = 0.1
    rewind_step: str = "0it"
    matching_tolerance: float = 0.002

    def seed_checkpoint_steps(self) -> tuple[str, ...]:
        return (self.rewind_step,) if self.seeds > 0 else ()


# config section name -> its typed dataclass (read by config.py through the family registry)
SECTIONS = {"lottery": LotteryConfig}
