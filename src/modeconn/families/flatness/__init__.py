"""The flatness family. Hessian trace (Hutchinson) and extreme eigenvalues at every family's minima and along its paths."""

TITLE = "Flatness"

# reports/flatness/<file> -> (caption file under captions/, label in the HTML report) or None: the
# one list of this family's report files (its report rule's outputs, dvc.yaml and the tests read it).
REPORTS = {
    "traces.csv": ("traces.rst", "Hessian-trace table"),
    "traces.md": None,
    "minima.csv": None,
    "paths.csv": None,
    "simplex.csv": None,
    "paths.png": ("paths.rst", "curvature along paths"),
    "sharpness.png": ("sharpness.rst", "trace vs test error"),
    "metrics.json": None,
    "section.md": None,
}
