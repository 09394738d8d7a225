# rebasin family (Git Re-Basin, Entezari et al., REPAIR): every pair of seeds is matched by every
# method (one job per pair); the width sweep trains its own seeds at each width (one job per width)
# and matches them (one job per width); one report job writes reports/rebasin/.
# LeNet-300-100 has fixed widths: no sweep for it (the report says so)
REBASIN_WIDTHS = [] if CFG.model.name == "lenet300_100" else list(CFG.rebasin.widths)
REBASIN_PAIR_FILES = ("paths.csv", "collapse.csv", "matching.json")
REBASIN_REPORT = [
    f"reports/rebasin/{name}"
    for name in (
        "barriers.csv", "barriers.md", "interpolation.csv", "interpolation.png", "width_sweep.csv",
        "width_sweep.png", "collapse.csv", "collapse.png", "matching.csv", "metrics.json", "section.md",
    )
]
# What a matching job reads: the seeds' model and data, how networks are evaluated, the family's section.
REBASIN_CFG = params_json(data=True, model=True, evaluation=True, rebasin=True)
REBASIN_CODE = code("stages.rebasin")


rule rebasin:
    input:
        REBASIN_REPORT,


rule match_rebasin:
    input:
        data=DATA_FILE,
        a=lambda w: POPULATION_DIR[int(w.a)],
        b=lambda w: POPULATION_DIR[int(w.b)],
    output:
        [f"results/rebasin/pairs/seed{{a}}-seed{{b}}/{name}" for name in REBASIN_PAIR_FILES],
        [f"results/rebasin/pairs/seed{{a}}-seed{{b}}/{method}.safetensors" for method in CFG.rebasin.methods],
    wildcard_constraints:
        a=r"\d+",
        b=r"\d+",
    params:
        cfg=REBASIN_CFG,
        code=REBASIN_CODE,
        out=lambda w: f"results/rebasin/pairs/seed{w.a}-seed{w.b}",
    conda:
        ENV
    # one thread: these small per-layer operations run several times faster single-threaded on
    # a shared machine, and two jobs then run side by side
    threads: 1
    resources:
        gpu=GPU,
    log:
        "logs/rebasin/match_seed{a}-seed{b}.log",
    shell:
        "modeconn rebasin-match --params {params.cfg:q} --data {input.data:q}"
        " --a {input.a:q}/seed{wildcards.a}.safetensors --b {input.b:q}/seed{wildcards.b}.safetensors"
        " --out-dir {params.out:q} --threads {threads} --rule match_rebasin --wildcards a={wildcards.a},b={wildcards.b}"
        " > {log:q} 2>&1"


rule train_rebasin_width:
    input:
        data=DATA_FILE,
    output:
        directory("results/rebasin/width/w{width}"),
    wildcard_constraints:
        width=r"\d+",
    params:
        cfg=params_json(data=True, model=True, train=True, evaluation=True, seeds={"first": CFG.seeds.first},
                        rebasin={k: FULL["rebasin"][k] for k in ("width_seeds", "width_duration")}),
        code=code("stages.rebasin"),
    conda:
        ENV
    threads: 1
    resources:
        gpu=GPU,
    log:
        "logs/rebasin/train_width{width}.log",
    shell:
        "modeconn rebasin-train-width --params {params.cfg:q} --width {wildcards.width} --data {input.data:q}"
        " --out-dir {output:q} --threads {threads} --rule train_rebasin_width --wildcards width={wildcards.width}"
        " > {log:q} 2>&1"


rule sweep_rebasin_width:
    input:
        data=DATA_FILE,
        seeds="results/rebasin/width/w{width}",
    output:
        "results/rebasin/sweep/width{width}.csv",
    wildcard_constraints:
        width=r"\d+",
    params:
        cfg=params_json(data=True, model=True, evaluation=True, seeds={"first": CFG.seeds.first}, rebasin=True),
        code=REBASIN_CODE,
    conda:
        ENV
    threads: 1
    resources:
        gpu=GPU,
    log:
        "logs/rebasin/sweep_width{width}.log",
    shell:
        "modeconn rebasin-sweep-width --params {params.cfg:q} --width {wildcards.width} --data {input.data:q}"
        " --in-dir {input.seeds:q} --out {output:q} --threads {threads} --rule sweep_rebasin_width"
        " --wildcards width={wildcards.width} > {log:q} 2>&1"


rule report_rebasin:
    input:
        pairs=[f"results/rebasin/pairs/seed{a}-seed{b}/{name}" for a, b in SEED_PAIRS for name in REBASIN_PAIR_FILES],
        sweeps=[f"results/rebasin/sweep/width{w}.csv" for w in REBASIN_WIDTHS],
    output:
        table=report("reports/rebasin/barriers.csv", caption="../report/rebasin_barriers.rst", category="Re-Basin", labels={"what": "barrier table"}),
        markdown="reports/rebasin/barriers.md",
        points="reports/rebasin/interpolation.csv",
        figure=report("reports/rebasin/interpolation.png", caption="../report/rebasin_interpolation.rst", category="Re-Basin", labels={"what": "interpolation"}),
        sweep="reports/rebasin/width_sweep.csv",
        sweep_figure=report("reports/rebasin/width_sweep.png", caption="../report/rebasin_width.rst", category="Re-Basin", labels={"what": "width sweep"}),
        collapse="reports/rebasin/collapse.csv",
        collapse_figure=report("reports/rebasin/collapse.png", caption="../report/rebasin_collapse.rst", category="Re-Basin", labels={"what": "variance collapse"}),
        matching="reports/rebasin/matching.csv",
        metrics="reports/rebasin/metrics.json",
        section="reports/rebasin/section.md",
    params:
        cfg=params_json(data=True, model=True, rebasin=True),
        pairs=[f"results/rebasin/pairs/seed{a}-seed{b}" for a, b in SEED_PAIRS],
        code=code("report.rebasin"),
    conda:
        ENV
    log:
        "logs/rebasin/report.log",
    shell:
        "modeconn report-rebasin --params {params.cfg:q} --out-dir reports/rebasin --rule report_rebasin"
        " --pairs {params.pairs:q} --sweeps {input.sweeps:q} > {log:q} 2>&1"
