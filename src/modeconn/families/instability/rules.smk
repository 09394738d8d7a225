# instability family (Frankle et al. 2020): one job per spawn step k forks every trunk into
# instability.pairs pairs of children and trains them all as one population; one report job.
INSTABILITY_STEPS = list(CFG.instability.steps)
INSTABILITY_TRUNKS = SEEDS[: CFG.instability.trunks]
# The flatness family measures every child.
FLATNESS_MINIMA["instability"] = [
    in_results(f"instability/k{k}/trunk{s}.pair{p}.child{c}.safetensors")
    for k in INSTABILITY_STEPS
    for s in INSTABILITY_TRUNKS
    for p in range(CFG.instability.pairs)
    for c in (0, 1)
]


rule instability:
    input:
        report_files("instability"),


rule fork_instability:
    input:
        data=DATA_FILE,
        trunks=[POPULATION_DIR[s] for s in INSTABILITY_TRUNKS],
    output:
        paths=in_results("instability/k{step}/paths.csv"),
        children=[
            in_results(f"instability/k{{step}}/trunk{s}.pair{p}.child{c}.safetensors")
            for s in INSTABILITY_TRUNKS
            for p in range(CFG.instability.pairs)
            for c in (0, 1)
        ],
    params:
        # the children train on the seeds' schedule from the trunks' step-k checkpoints
        cfg=params_json(data=True, model=True, train=True, evaluation=True, seeds={"first": CFG.seeds.first, "count": CFG.seeds.count}, instability=True),
        code=code("families.instability.stage"),
        out=in_results("instability/k{step}"),
    conda:
        ENV
    # one thread: this small population gains little from a second one, and two jobs then run side by side
    threads: 1
    # feeds the instability curvature job
    priority: 4
    resources:
        gpu=GPU,
    log:
        in_logs("instability/fork_k{step}.log"),
    shell:
        "modeconn instability-fork --params {params.cfg:q} --step {wildcards.step} --data {input.data:q}"
        " --trunk-dirs {input.trunks:q} --out-dir {params.out:q} --threads {threads} --rule fork_instability"
        " --wildcards step={wildcards.step} > {log:q} 2>&1"


rule report_instability:
    input:
        [in_results(f"instability/k{k}/paths.csv") for k in INSTABILITY_STEPS],
    output:
        report_outputs("instability"),
    params:
        out_dir=output_dir,
        cfg=params_json(data=True, model=True, train=True, instability=True, barrier=True),
        code=code("families.instability.report"),
    conda:
        ENV
    log:
        in_logs("instability/report.log"),
    shell:
        "modeconn report-instability --params {params.cfg:q} --out-dir {params.out_dir:q} --rule report_instability {input:q} > {log:q} 2>&1"
