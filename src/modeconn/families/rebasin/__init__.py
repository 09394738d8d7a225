"""The rebasin family. Permutation alignment (Git Re-Basin: Ainsworth et al. 2023; Entezari et al. 2022): weight,
activation and straight-through matching; barriers before/after, REPAIR (Jordan et al. 2022), width sweep."""

TITLE = "Re-Basin"

# reports/rebasin/<file> -> (caption file under captions/, label in the HTML report) or None: the
# one list of this family's report files (its report rule's outputs, dvc.yaml and the tests read it).
REPORTS = {
    "barriers.csv": ("barriers.rst", "barrier table"),
    "barriers.md": None,
    "interpolation.csv": None,
    "interpolation.png": ("interpolation.rst", "interpolation"),
    "width_sweep.csv": None,
    "width_sweep.png": ("width.rst", "width sweep"),
    "collapse.csv": None,
    "collapse.png": ("collapse.rst", "variance collapse"),
    "matching.csv": None,
    "metrics.json": None,
    "section.md": None,
}
