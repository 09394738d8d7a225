"""Typed config sections of the rebasin family (schema: schema.yaml beside this file)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RebasinConfig:
    """Permutation alignment, barriers before/after, REPAIR, width sweep (Ainsworth et al. 2023; Jordan et al. 2022)."""

    methods: tuple[str, ...] = ("none", "weight", "activation", "ste")
    interpolation_points: int = 25
    max_sweeps: int = 100
    activation_examples: int = 2000
    activation_batch_size: int = 500
    ste_steps: int = 20
    ste_lr: float = 0.003
    ste_batch_size: int = 256
    ste_eval_examples: int = 2000
    repair: bool = True
    repair_examples: int = 2000
    widths: tuple[int, ...] = (16, 64, 256)
    width_seeds: int = 2
    width_duration: str = "15ep"


# config section name -> its typed dataclass (read by config.py through the family registry)
SECTIONS = {"rebasin": RebasinConfig}
