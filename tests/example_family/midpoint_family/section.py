from dataclasses import dataclass


@dataclass(frozen=True)
class MidpointConfig:
    split: str = "test"


SECTIONS = {"midpoint": MidpointConfig}
