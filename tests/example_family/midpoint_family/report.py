from pathlib import Path

import pandas as pd

from modeconn.io import write_json, write_text


def write(csvs: list[Path], out_dir: Path, split: str) -> None:
    rows = []
    for csv in csvs:
        table = pd.read_csv(csv)
        mid = table[(table.split == split)].iloc[(table[table.split == split].alpha - 0.5).abs().argmin()]
        rows.append({"pair": csv.stem, "alpha": mid.alpha, "loss": mid.loss, "error": mid.error})
    frame = pd.DataFrame(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "midpoints.csv", frame.to_csv(index=False))
    write_json(out_dir / "metrics.json", {"pairs": len(frame), "split": split, "mean_error": float(frame.error.mean())})
    write_text(out_dir / "section.md", f"## Midpoints of the linear paths\n\nMean {split} error at α = ½ over {len(frame)} pairs: {frame.error.mean():.3f}.\n")
