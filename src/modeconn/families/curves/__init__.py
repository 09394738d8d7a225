"""The curves family. Bezier and PolyChain curves between two minima (Garipov et al. 2018): loss and error along t,
ensembles along the curves, the plane through the bend."""

TITLE = "Curves"

# reports/curves/<file> -> (caption file under captions/, label in the HTML report) or None: the
# one list of this family's report files (its report rule's outputs, dvc.yaml and the tests read it).
REPORTS = {
    "table.csv": ("table.rst", "curve table"),
    "table.md": None,
    "ensembles.csv": ("ensembles.rst", "ensembles table"),
    "ensembles.md": None,
    "along.csv": None,
    "along.png": ("along.rst", "along the paths"),
    "ensembles.png": ("ensembles_figure.rst", "ensembles figure"),
    "plane.png": ("plane.rst", "curve plane"),
    "metrics.json": None,
    "section.md": None,
}
