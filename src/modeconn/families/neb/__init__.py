"""The neb family. AutoNEB minimum-energy paths between minima, saddle vs endpoint loss, the minimum spanning tree
(Draxler et al. 2018)."""

TITLE = "AutoNEB"

# reports/neb/<file> -> (caption file under captions/, label in the HTML report) or None: the
# one list of this family's report files (its report rule's outputs, dvc.yaml and the tests read it).
REPORTS = {
    "paths.png": ("paths.rst", "NEB vs linear paths"),
    "paths.csv": None,
    "saddles.csv": ("saddles.rst", "saddle table"),
    "saddles.md": None,
    "mst.csv": None,
    "mst.png": ("mst.rst", "minimum spanning tree"),
    "metrics.json": None,
    "section.md": None,
}
