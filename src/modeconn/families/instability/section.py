"""Typed config sections of the instability family (schema: schema.yaml beside this file)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InstabilityConfig:
    """Spawn/fork instability analysis (Frankle et al. 2020).

    The first `trunks` seeds of the seeds family are the trunks; at every spawn step k in `steps`
    each trunk is forked into `pairs` pairs of children that share the step-k weights and optimizer
    state and differ only in their data-order and augmentation seeds. Instability = error barrier
    between the two children over `points` evenly spaced alphas; a trunk is stable at k when it is
    below `threshold`.
    """

    steps: tuple[str, ...] = ("0it", "8it", "32it", "128it")
    trunks: int = 2
    pairs: int = 1
    points: int = 30
    threshold: float = 0.02

    def seed_checkpoint_steps(self) -> tuple[str, ...]:
        return self.steps if self.trunks > 0 else ()


# config section name -> its typed dataclass (read by config.py through the family registry)
SECTIONS = {"instability": InstabilityConfig}
