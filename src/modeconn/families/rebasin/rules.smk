# rebasin family (Git Re-Basin, Entezari et al., REPAIR): every pair of seeds is matched by every
# method (one job per pair); the width sweep trains its own seeds at each width (one job per width)
# and matches them (one job per width); one report job writes reports/rebasin/.
# A model with fixed widths (the model registry's width_key is None, e.g. LeNet-300-100) has no
# sweep (the report says so).
REBASIN_WIDTHS = list(CFG.rebasin.widths) if width_key(CFG.model.name) else []
REBASIN_PAIR_FILES = ("paths.csv", "collapse.csv", "matching.json")
# What a matching job reads: the seeds' model and data, how networks are evaluated, the family's section.
REBASIN_CFG = params_json(data=True, model=True, evaluation=True, rebasin=True)
REBASIN_CODE = code("families.rebasin.stage")
# The flatness family measures along the weight-matched linear paths (Re-Basin's main method; the
# unmatched path is the seeds' linear path).
FLATNESS_PATHS["rebasin"] = [
    (seed_file(a), in_results(f"rebasin/pairs/seed{a}-seed{b}/weight.safetensors")) for a, b in SEED_PAIRS if "weight" in CFG.rebasin.methods
]


rule rebasin:
    input:
        report_files("rebasin"),


rule match_rebasin:
    input:
        data=DATA_FILE,
        a=lambda w: POPULATION_DIR[int(w.a)],
        b=lambda w: POPULATION_DIR[int(w.b)],
    output:
        [in_results(f"rebasin/pairs/seed{{a}}-seed{{b}}/{name}") for name in REBASIN_PAIR_FILES],
        [in_results(f"rebasin/pairs/seed{{a}}-seed{{b}}/{method}.safetensors") for method in CFG.rebasin.methods],
    params:
        cfg=REBASIN_CFG,
        code=REBASIN_CODE,
        out=lambda w: in_results(f"rebasin/pairs/seed{w.a}-seed{w.b}"),
    conda:
        ENV
    # one thread: these small per-layer operations run several times faster single-threaded on
    # a shared machine, and two jobs then run side by side
    threads: 1
    # feeds a curvature job of 30 networks (the run's longest): done early, that job does not end the run alone
    priority: 4
    resources:
        gpu=GPU,
    log:
        in_logs("rebasin/match_seed{a}-seed{b}.log"),
    shell:
        "modeconn rebasin-match --params {params.cfg:q} --data {input.data:q}"
        " --a {input.a:q}/seed{wildcards.a}.safetensors --b {input.b:q}/seed{wildcards.b}.safetensors"
        " --out-dir {params.out:q} --threads {threads} --rule match_rebasin --wildcards a={wildcards.a},b={wildcards.b}"
        " > {log:q} 2>&1"


rule train_rebasin_width:
    input:
        data=DATA_FILE,
    output:
        directory(in_results("rebasin/width/w{width}")),
    params:
        cfg=params_json(data=True, model=True, train=True, evaluation=True, seeds={"first": CFG.seeds.first},
                        rebasin={k: FULL["rebasin"][k] for k in ("width_seeds", "width_duration")}),
        code=code("families.rebasin.stage"),
    conda:
        ENV
    threads: 1
    resources:
        gpu=GPU,
    log:
        in_logs("rebasin/train_width{width}.log"),
    shell:
        "modeconn rebasin-train-width --params {params.cfg:q} --width {wildcards.width} --data {input.data:q}"
        " --out-dir {output:q} --threads {threads} --rule train_rebasin_width --wildcards width={wildcards.width}"
        " > {log:q} 2>&1"


rule sweep_rebasin_width:
    input:
        data=DATA_FILE,
        seeds=in_results("rebasin/width/w{width}"),
    output:
        in_results("rebasin/sweep/width{width}.csv"),
    params:
        cfg=params_json(data=True, model=True, evaluation=True, seeds={"first": CFG.seeds.first}, rebasin=True),
        code=REBASIN_CODE,
    conda:
        ENV
    threads: 1
    resources:
        gpu=GPU,
    log:
        in_logs("rebasin/sweep_width{width}.log"),
    shell:
        "modeconn rebasin-sweep-width --params {params.cfg:q} --width {wildcards.width} --data {input.data:q}"
        " --in-dir {input.seeds:q} --out {output:q} --threads {threads} --rule sweep_rebasin_width"
        " --wildcards width={wildcards.width} > {log:q} 2>&1"


rule report_rebasin:
    input:
        pairs=[in_results(f"rebasin/pairs/seed{a}-seed{b}/{name}") for a, b in SEED_PAIRS for name in REBASIN_PAIR_FILES],
        sweeps=[in_results(f"rebasin/sweep/width{w}.csv") for w in REBASIN_WIDTHS],
    output:
        report_outputs("rebasin"),
    params:
        out_dir=output_dir,
        cfg=params_json(data=True, model=True, rebasin=True, barrier=True),
        pairs=[in_results(f"rebasin/pairs/seed{a}-seed{b}") for a, b in SEED_PAIRS],
        code=code("families.rebasin.report"),
    conda:
        ENV
    log:
        in_logs("rebasin/report.log"),
    shell:
        "modeconn report-rebasin --params {params.cfg:q} --out-dir {params.out_dir:q} --rule report_rebasin"
        " --pairs {params.pairs:q} --sweeps {input.sweeps:q} > {log:q} 2>&1"
