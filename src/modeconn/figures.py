"""What every report figure shares: written atomically as a PNG, then closed."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display in workflow jobs
import matplotlib.pyplot as plt  # noqa: E402

from .io import atomic_path  # noqa: E402


def save_figure(fig, path: str | Path) -> None:
    """Save `fig` (a matplotlib Figure) to `path` as a 120-dpi PNG, atomically, and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
