# Helpers of flatness.smk (kept apart so that the rules file holds only data and rules):
# mapping the checkpoint files in FLATNESS_MINIMA / FLATNESS_PATHS / LANDSCAPE_* to job inputs.


def seed_file(seed):
    return f"{POPULATION_DIR[seed]}/seed{seed}.safetensors"


def needed(path):
    """The workflow output that provides `path` (its directory() output, or the file itself)."""
    for directory in DIRECTORY_OUTPUTS:
        if path.startswith(f"{directory}/"):
            return directory
    return path


def declared_section(family):
    """reports/<family>/section.md if the family's target already lists it, else nothing."""
    section = f"reports/{family}/section.md"
    if not rules.has(family):  # the family has no rules yet
        return []
    return [section] if section in list(getattr(rules, family).input) else []


def readme_inputs():
    files = []
    for family in README_FAMILIES:
        files += README_INPUTS.get(family) or declared_section(family)
    return files


def path_spec(family, path):
    files = ",".join(path_files(path))
    return f"{family}={files}"


def path_files(path):
    return list(path) if isinstance(path, (tuple, list)) else [path]
