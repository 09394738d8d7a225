"""The midpoint family, a minimal example of a family that lives outside the package (see
CONTRIBUTING.md): the loss and error at the midpoint α = ½ of the linear path between every pair
of seeds, read from the seeds family's interpolation tables."""

TITLE = "Midpoints"

REPORTS = {
    "midpoints.csv": ("midpoints.rst", "midpoint table"),
    "metrics.json": None,
    "section.md": None,
}
