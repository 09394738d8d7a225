"""The fge family. Fast geometric ensembling (Garipov et al. 2018) and stochastic weight averaging (Izmailov et al.
2018) from the seeds' late checkpoints."""

TITLE = "FGE and SWA"

# reports/fge/<file> -> (caption file under captions/, label in the HTML report) or None: the
# one list of this family's report files (its report rule's outputs, dvc.yaml and the tests read it).
REPORTS = {
    "fge.csv": ("table.rst", "FGE table"),
    "fge.md": None,
    "swa.csv": ("swa.rst", "SWA table"),
    "swa.md": None,
    "ensemble_size.csv": None,
    "fge.png": ("figure.rst", "FGE figure"),
    "metrics.json": None,
    "section.md": None,
}
