"""The seeds family. Independently trained networks (separate init, data-order and augmentation seeds) and the
linear path between every pair: the barrier every other family starts from."""

TITLE = "Seeds"

# reports/seeds/<file> -> (caption file under captions/, label in the HTML report) or None: the
# one list of this family's report files (its report rule's outputs, dvc.yaml and the tests read it).
REPORTS = {
    "barriers.csv": ("barriers.rst", "barrier table"),
    "barriers.md": None,
    "interpolation.csv": None,
    "interpolation.png": ("interpolation.rst", "interpolation figure"),
    "metrics.json": None,
    "section.md": None,
}
