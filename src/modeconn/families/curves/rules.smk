# Curves family (Garipov et al. 2018): Bezier / PolyChain curves between the minima of the first
# `curves.pairs` seed pairs, evaluated along t next to the linear path, ensembles along the curves,
# and the plane through each curve's endpoints and free bend.
CURVE_PAIRS = SEED_PAIRS[: CFG.curves.pairs]
CURVE_KINDS = list(CFG.curves.kinds)
# The flatness family measures along every curve.
FLATNESS_PATHS["curves"] = [in_results(f"curves/seed{a}-seed{b}.{kind}.safetensors") for a, b in CURVE_PAIRS for kind in CURVE_KINDS]
# The curve checkpoints of one pair (one per kind), input of its evaluation and plane jobs.
CURVE_FILES = lambda w: [in_results(f"curves/seed{w.a}-seed{w.b}.{kind}.safetensors") for kind in CURVE_KINDS]  # noqa: E731


rule curves:
    input:
        report_files("curves"),


rule train_curves:
    input:
        data=DATA_FILE,
        a=lambda w: POPULATION_DIR[int(w.a)],
        b=lambda w: POPULATION_DIR[int(w.b)],
    output:
        [in_results(f"curves/seed{{a}}-seed{{b}}.{kind}.safetensors") for kind in CURVE_KINDS],
    params:
        cfg=params_json(data=True, model=True, train=True, curves=True),
        code=code("families.curves.stage"),
    conda:
        ENV
    threads: 1
    # starts a chain of jobs: scheduled before independent short jobs so that both cores stay busy to the end
    priority: 5
    resources:
        gpu=GPU,
    log:
        in_logs("curves/train_seed{a}-seed{b}.log"),
    shell:
        "modeconn train-curves --params {params.cfg:q} --data {input.data:q}"
        " --a {input.a:q}/seed{wildcards.a}.safetensors --b {input.b:q}/seed{wildcards.b}.safetensors"
        " --out {output:q} --threads {threads} --rule train_curves --wildcards a={wildcards.a},b={wildcards.b}"
        " > {log:q} 2>&1"


rule evaluate_curves:
    input:
        data=DATA_FILE,
        a=lambda w: POPULATION_DIR[int(w.a)],
        b=lambda w: POPULATION_DIR[int(w.b)],
        curves=CURVE_FILES,
    output:
        along=in_results("curves/along/seed{a}-seed{b}.csv"),
        ensembles=in_results("curves/ensembles/seed{a}-seed{b}.csv"),
    params:
        cfg=params_json(data=True, model=True, evaluation=True, curves=True),
        code=code("families.curves.stage"),
    conda:
        ENV
    threads: 1
    resources:
        gpu=GPU,
    log:
        in_logs("curves/evaluate_seed{a}-seed{b}.log"),
    shell:
        "modeconn evaluate-curves --params {params.cfg:q} --data {input.data:q}"
        " --a {input.a:q}/seed{wildcards.a}.safetensors --b {input.b:q}/seed{wildcards.b}.safetensors"
        " --curves {input.curves:q} --along {output.along:q} --ensembles {output.ensembles:q}"
        " --threads {threads} --rule evaluate_curves --wildcards a={wildcards.a},b={wildcards.b} > {log:q} 2>&1"


rule curve_plane:
    input:
        data=DATA_FILE,
        a=lambda w: POPULATION_DIR[int(w.a)],
        b=lambda w: POPULATION_DIR[int(w.b)],
        curves=CURVE_FILES,
    output:
        in_results("curves/plane/seed{a}-seed{b}.csv"),
    params:
        cfg=params_json(data=True, model=True, evaluation=True, curves=True),
        code=code("families.curves.stage"),
    conda:
        ENV
    threads: 1
    resources:
        gpu=GPU,
    log:
        in_logs("curves/plane_seed{a}-seed{b}.log"),
    shell:
        "modeconn curve-plane --params {params.cfg:q} --data {input.data:q}"
        " --a {input.a:q}/seed{wildcards.a}.safetensors --b {input.b:q}/seed{wildcards.b}.safetensors"
        " --curves {input.curves:q} --out {output:q}"
        " --threads {threads} --rule curve_plane --wildcards a={wildcards.a},b={wildcards.b} > {log:q} 2>&1"


rule report_curves:
    input:
        along=[in_results(f"curves/along/seed{a}-seed{b}.csv") for a, b in CURVE_PAIRS],
        ensembles=[in_results(f"curves/ensembles/seed{a}-seed{b}.csv") for a, b in CURVE_PAIRS],
        planes=[in_results(f"curves/plane/seed{a}-seed{b}.csv") for a, b in CURVE_PAIRS],
    output:
        report_outputs("curves"),
    params:
        out_dir=output_dir,
        cfg=params_json(data=True, model=True, curves=True, barrier=True),
        code=code("families.curves.report"),
    conda:
        ENV
    log:
        in_logs("curves/report.log"),
    shell:
        "modeconn report-curves --params {params.cfg:q} --out-dir {params.out_dir:q} --rule report_curves"
        " --along {input.along:q} --ensembles {input.ensembles:q} --planes {input.planes:q} > {log:q} 2>&1"
