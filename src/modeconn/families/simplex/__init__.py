"""The simplex family. Low-loss simplexes grown from each seed (SPRO) and simplex ensembles (ESPRO) (Benton et al. 2021)."""

TITLE = "Simplexes"

# reports/simplex/<file> -> (caption file under captions/, label in the HTML report) or None: the
# one list of this family's report files (its report rule's outputs, dvc.yaml and the tests read it).
REPORTS = {
    "simplex.png": ("sizes.rst", "loss in the simplexes"),
    "ensemble.png": ("ensemble.rst", "ESPRO vs deep ensemble"),
    "sizes.csv": ("sizes.rst", "table per simplex size"),
    "sizes.md": None,
    "ensemble.md": None,
    "points.csv": None,
    "ensemble.csv": None,
    "metrics.json": None,
    "section.md": None,
}
