"""The lottery family. Iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2020) beside
random pruning and random reinitialisation; matching and stable sparsity levels."""

TITLE = "Lottery tickets"

# reports/lottery/<file> -> (caption file under captions/, label in the HTML report) or None: the
# one list of this family's report files (its report rule's outputs, dvc.yaml and the tests read it).
REPORTS = {
    "accuracy.csv": None,
    "levels.csv": ("levels.rst", "levels table"),
    "levels.md": None,
    "accuracy.png": ("accuracy.rst", "accuracy vs sparsity"),
    "stability.png": ("stability.rst", "instability vs sparsity"),
    "metrics.json": None,
    "section.md": None,
}
