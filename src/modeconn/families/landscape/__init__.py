"""The landscape family. Filter-normalised 1-D / 2-D loss landscapes around minima and on the line through two
(Li et al. 2018)."""

TITLE = "Landscapes"

# reports/landscape/<file> -> (caption file under captions/, label in the HTML report) or None: the
# one list of this family's report files (its report rule's outputs, dvc.yaml and the tests read it).
REPORTS = {
    "landscape_1d.png": ("1d.rst", "1-D landscape"),
    "landscape_2d.png": ("2d.rst", "2-D landscape"),
    "between.png": ("between.rst", "between minima"),
    "surface_1d.csv": None,
    "surface_2d.csv": None,
    "between.csv": None,
    "metrics.json": None,
    "section.md": None,
}
