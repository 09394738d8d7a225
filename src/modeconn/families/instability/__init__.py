"""The instability family. Linear mode connectivity and the lottery ticket hypothesis (Frankle et al. 2020): fork trunks at
spawn step k into children with different SGD noise; error barrier between the children vs k."""

TITLE = "Instability"

# reports/instability/<file> -> (caption file under captions/, label in the HTML report) or None: the
# one list of this family's report files (its report rule's outputs, dvc.yaml and the tests read it).
REPORTS = {
    "barriers.csv": None,
    "instability.csv": ("table.rst", "instability table"),
    "instability.md": None,
    "instability.png": ("figure.rst", "instability vs k"),
    "metrics.json": None,
    "section.md": None,
}
