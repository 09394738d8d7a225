# flatness family (Hessian trace / top eigenvalue at minima and along paths), loss landscapes
# (Li et al. 2018), and the consolidated reports/README.md. Target `flatness` lists every report file.
#
# Inputs of the curvature jobs come from the two dicts below, one entry per family: extend them as
# families land (one curvature job per family and dict; the report takes every job's table).
# The helpers (seed_file, needed, path_spec, readme_inputs...) live in flatness_helpers.smk.


include: "flatness_helpers.smk"


# family -> checkpoints of its minima (any network checkpoint: seed, fork, ticket, fge, swa...)
FLATNESS_MINIMA = {
    "seeds": [seed_file(s) for s in SEEDS],
    "instability": [
        f"results/instability/k{k}/trunk{s}.pair{p}.child{c}.safetensors"
        for k in INSTABILITY_STEPS
        for s in INSTABILITY_TRUNKS
        for p in range(CFG.instability.pairs)
        for c in (0, 1)
    ],
    "lottery": [f"results/lottery/level{l}/seed{s}.imp.safetensors" for l in LOTTERY_LEVELS for s in LOTTERY_SEEDS],
    "fge": [f"results/fge/snapshots/seed{s}.cycle{j}.safetensors" for s in SEEDS for j in range(CFG.fge.cycles)],
    "swa": [f"results/swa/models/seed{s}.safetensors" for s in SEEDS],
}
# family -> its paths: a pair (A, B) of network checkpoints for the linear path between them, or one
# path checkpoint (stacked anchors, meta kind "path" with "path" and "anchors") or simplex checkpoint.
FLATNESS_PATHS = {
    "seeds": [(seed_file(a), seed_file(b)) for a, b in SEED_PAIRS],
    "curves": [f"results/curves/seed{a}-seed{b}.{kind}.safetensors" for a, b in CURVE_PAIRS for kind in CURVE_KINDS],
    "neb": [f"results/neb/seed{a}-seed{b}.safetensors" for a, b in NEB_PAIRS],
    "simplex": [f"results/simplex/seed{s}.safetensors" for s in SIMPLEX_SEEDS],
    "rebasin": [
        (seed_file(a), f"results/rebasin/pairs/seed{a}-seed{b}/{method}.safetensors")
        for a, b in SEED_PAIRS
        for method in CFG.rebasin.methods
        if method == "weight"  # Re-Basin's main method; the unmatched path is the seeds' linear path
    ],
}
# Landscapes: name -> the minimum drawn around; name -> the two minima of a line through both.
LANDSCAPE_CENTERS = {f"seed{s}": seed_file(s) for s in CFG.landscape.chosen_centers(SEEDS)}
LANDSCAPE_PAIRS = {f"seed{a}-seed{b}": (seed_file(a), seed_file(b)) for a, b in CFG.landscape.chosen_pairs(SEED_PAIRS)}
# A file inside a directory() output is required through that directory.
DIRECTORY_OUTPUTS = sorted(set(POPULATION_DIR.values())) + [f"results/lottery/level{l}" for l in LOTTERY_LEVELS] + ["results/fge/snapshots", "results/swa/models"]

FLATNESS_REPORT = [
    f"reports/flatness/{name}"
    for name in ("traces.csv", "traces.md", "minima.csv", "paths.csv", "paths.png", "sharpness.png", "metrics.json", "section.md")
]
LANDSCAPE_REPORT = [
    f"reports/landscape/{name}"
    for name in ("landscape_1d.png", "landscape_2d.png", "between.png", "surface_1d.csv", "surface_2d.csv", "between.csv", "metrics.json", "section.md")
]
# The consolidated report, families in this order. README_INPUTS names what a family's section is
# made from; a family not in it is included when its target rule lists reports/<family>/section.md
# (the seeds' section is built from its barrier table and metrics).
README_FAMILIES = ["seeds", "instability", "lottery", "curves", "fge", "neb", "simplex", "rebasin", "flatness", "landscape"]
README_INPUTS = {
    "seeds": ["reports/seeds/barriers.md", "reports/seeds/metrics.json", "reports/seeds/interpolation.png"],
    "flatness": ["reports/flatness/section.md"],
    "landscape": ["reports/landscape/section.md"],
}


rule flatness:
    input:
        FLATNESS_REPORT,
        LANDSCAPE_REPORT,


rule landscape:
    input:
        LANDSCAPE_REPORT,


rule curvature_minima:
    input:
        data=DATA_FILE,
        networks=lambda w: sorted({needed(f) for f in FLATNESS_MINIMA[w.family]}),
    output:
        "results/flatness/minima/{family}.csv",
    params:
        cfg=params_json(data=True, model=True, evaluation=True, flatness=True),
        specs=lambda w: " ".join(f"--minimum {w.family}={f}" for f in FLATNESS_MINIMA[w.family]),
        code=code("stages.flatness"),
    conda:
        ENV
    threads: 1
    resources:
        gpu=GPU,
    log:
        "logs/flatness/curvature_minima_{family}.log",
    shell:
        "modeconn curvature --params {params.cfg:q} --data {input.data:q} {params.specs} --out {output:q}"
        " --threads {threads} --rule curvature_minima --wildcards family={wildcards.family} > {log:q} 2>&1"


rule curvature_paths:
    input:
        data=DATA_FILE,
        networks=lambda w: sorted({needed(f) for p in FLATNESS_PATHS[w.family] for f in path_files(p)}),
    output:
        "results/flatness/paths/{family}.csv",
    params:
        cfg=params_json(data=True, model=True, evaluation=True, flatness=True),
        specs=lambda w: " ".join(f"--path {path_spec(w.family, p)}" for p in FLATNESS_PATHS[w.family]),
        code=code("stages.flatness"),
    conda:
        ENV
    threads: 1
    resources:
        gpu=GPU,
    log:
        "logs/flatness/curvature_paths_{family}.log",
    shell:
        "modeconn curvature --params {params.cfg:q} --data {input.data:q} {params.specs} --out {output:q}"
        " --threads {threads} --rule curvature_paths --wildcards family={wildcards.family} > {log:q} 2>&1"


rule report_flatness:
    input:
        [f"results/flatness/minima/{f}.csv" for f in FLATNESS_MINIMA],
        [f"results/flatness/paths/{f}.csv" for f in FLATNESS_PATHS],
    output:
        table=report("reports/flatness/traces.csv", caption="../report/flatness_traces.rst", category="Flatness", labels={"what": "Hessian-trace table"}),
        markdown="reports/flatness/traces.md",
        minima="reports/flatness/minima.csv",
        points="reports/flatness/paths.csv",
        paths=report("reports/flatness/paths.png", caption="../report/flatness_paths.rst", category="Flatness", labels={"what": "trace along paths"}),
        sharpness=report("reports/flatness/sharpness.png", caption="../report/flatness_sharpness.rst", category="Flatness", labels={"what": "trace vs test error"}),
        metrics="reports/flatness/metrics.json",
        section="reports/flatness/section.md",
    params:
        cfg=params_json(),
        code=code("report.flatness"),
    conda:
        ENV
    log:
        "logs/flatness/report.log",
    shell:
        "modeconn report-flatness --params {params.cfg:q} --out-dir reports/flatness --rule report_flatness {input:q} > {log:q} 2>&1"


rule landscape_directions:
    input:
        lambda w: needed(LANDSCAPE_CENTERS[w.center]),
    output:
        "results/landscape/{center}/directions.safetensors",
    params:
        cfg=params_json(model=True, landscape={k: FULL["landscape"][k] for k in ("seed", "bias_and_norm")}),
        center=lambda w: LANDSCAPE_CENTERS[w.center],
        code=code("stages.landscape"),
    conda:
        ENV
    threads: 1
    resources:
        gpu=GPU,
    log:
        "logs/landscape/directions_{center}.log",
    shell:
        "modeconn landscape-directions --params {params.cfg:q} --center {params.center:q} --out {output:q}"
        " --threads {threads} --rule landscape_directions --wildcards center={wildcards.center} > {log:q} 2>&1"


rule landscape_around:
    input:
        data=DATA_FILE,
        center=lambda w: needed(LANDSCAPE_CENTERS[w.center]),
        directions="results/landscape/{center}/directions.safetensors",
    output:
        "results/landscape/{center}/surface{dims}d.csv",
    wildcard_constraints:
        dims="[12]",
    params:
        cfg=params_json(data=True, model=True, evaluation=True, landscape=True),
        center=lambda w: LANDSCAPE_CENTERS[w.center],
        code=code("stages.landscape"),
    conda:
        ENV
    threads: 1
    resources:
        gpu=GPU,
    log:
        "logs/landscape/around_{center}_{dims}d.log",
    shell:
        "modeconn landscape-around --params {params.cfg:q} --data {input.data:q} --center {params.center:q}"
        " --directions {input.directions:q} --dims {wildcards.dims} --out {output:q} --threads {threads}"
        " --rule landscape_around --wildcards center={wildcards.center},dims={wildcards.dims} > {log:q} 2>&1"


rule landscape_between:
    input:
        data=DATA_FILE,
        networks=lambda w: sorted({needed(f) for f in LANDSCAPE_PAIRS[w.pair]}),
    output:
        "results/landscape/between/{pair}.csv",
    params:
        cfg=params_json(data=True, model=True, evaluation=True, landscape=True),
        a=lambda w: LANDSCAPE_PAIRS[w.pair][0],
        b=lambda w: LANDSCAPE_PAIRS[w.pair][1],
        code=code("stages.landscape"),
    conda:
        ENV
    threads: 1
    resources:
        gpu=GPU,
    log:
        "logs/landscape/between_{pair}.log",
    shell:
        "modeconn landscape-between --params {params.cfg:q} --data {input.data:q} --a {params.a:q} --b {params.b:q}"
        " --out {output:q} --threads {threads} --rule landscape_between --wildcards pair={wildcards.pair} > {log:q} 2>&1"


rule report_landscape:
    input:
        around=[f"results/landscape/{c}/surface{d}d.csv" for c in LANDSCAPE_CENTERS for d in (1, 2)],
        between=[f"results/landscape/between/{p}.csv" for p in LANDSCAPE_PAIRS],
    output:
        one=report("reports/landscape/landscape_1d.png", caption="../report/landscape_1d.rst", category="Landscapes", labels={"what": "1-D landscape"}),
        two=report("reports/landscape/landscape_2d.png", caption="../report/landscape_2d.rst", category="Landscapes", labels={"what": "2-D landscape"}),
        between=report("reports/landscape/between.png", caption="../report/landscape_between.rst", category="Landscapes", labels={"what": "between minima"}),
        surface1="reports/landscape/surface_1d.csv",
        surface2="reports/landscape/surface_2d.csv",
        points="reports/landscape/between.csv",
        metrics="reports/landscape/metrics.json",
        section="reports/landscape/section.md",
    params:
        cfg=params_json(landscape=True),
        code=code("report.landscape"),
    conda:
        ENV
    log:
        "logs/landscape/report.log",
    shell:
        "modeconn report-landscape --params {params.cfg:q} --around {input.around:q} --between {input.between:q}"
        " --out-dir reports/landscape --rule report_landscape > {log:q} 2>&1"


rule report_readme:
    input:
        readme_inputs(),
    output:
        "reports/README.md",
    params:
        cfg=params_json(data=True, model=True, train=True, seeds=True, evaluation=True),
        code=code("report.consolidated"),
    conda:
        ENV
    log:
        "logs/report/readme.log",
    shell:
        "modeconn report-readme --params {params.cfg:q} --reports reports --out {output:q} --rule report_readme > {log:q} 2>&1"
