# lottery family (Frankle & Carbin 2019; Frankle et al. 2020): one job per IMP level (levels are
# sequential: level l prunes level l-1's ticket); all lottery seeds, both baselines and a
# fork copy of each ticket train as one population per level; one report job.
LOTTERY_SEEDS = SEEDS[: CFG.lottery.seeds]
LOTTERY_LEVELS = list(range(1, CFG.lottery.levels + 1))
# The flatness family measures every IMP ticket (its Hessian restricted to the surviving weights).
FLATNESS_MINIMA["lottery"] = [in_results(f"lottery/level{l}/seed{s}.imp.safetensors") for l in LOTTERY_LEVELS for s in LOTTERY_SEEDS]
DIRECTORY_OUTPUTS.extend(in_results(f"lottery/level{l}") for l in LOTTERY_LEVELS)


rule lottery:
    input:
        report_files("lottery"),


rule lottery_level:
    input:
        data=DATA_FILE,
        seeds=[POPULATION_DIR[s] for s in LOTTERY_SEEDS],
        # level l prunes the tickets of level l-1 (level 1 prunes the trained dense seeds)
        previous=lambda w: [in_results(f"lottery/level{int(w.level) - 1}")] if int(w.level) > 1 else [],
    output:
        directory(in_results("lottery/level{level}")),
    params:
        # tickets train on the seeds' schedule; their stability uses the instability section's alphas
        cfg=params_json(data=True, model=True, train=True, evaluation=True, seeds={"first": CFG.seeds.first, "count": CFG.seeds.count},
                        lottery=True, instability={"points": CFG.instability.points}),
        code=code("families.lottery.stage"),
        previous=lambda w, input: f"--previous {input.previous[0]}" if input.previous else "",
    conda:
        ENV
    # one thread: the spawn-step jobs of the instability family run beside the chain on the second
    # core (two threads on a busy machine were several times slower)
    threads: 1
    # each level waits for the previous one: the longest chain of the DAG, so it starts first. (One
    # `priority:` only: of two, Snakemake keeps the first, and a leftover `priority: 1` here held
    # level 1 back until the curvature jobs were done, leaving one core idle at the end.)
    priority: 5
    resources:
        gpu=GPU,
    log:
        in_logs("lottery/level{level}.log"),
    shell:
        "modeconn lottery-level --params {params.cfg:q} --level {wildcards.level} --data {input.data:q}"
        " --seed-dirs {input.seeds:q} {params.previous} --out-dir {output:q} --threads {threads} --rule lottery_level"
        " --wildcards level={wildcards.level} > {log:q} 2>&1"


rule report_lottery:
    input:
        [in_results(f"lottery/level{level}") for level in LOTTERY_LEVELS],
    output:
        report_outputs("lottery"),
    params:
        out_dir=output_dir,
        cfg=params_json(data=True, model=True, train=True, lottery=True, instability={"threshold": CFG.instability.threshold}, barrier=True),
        code=code("families.lottery.report"),
    conda:
        ENV
    log:
        in_logs("lottery/report.log"),
    shell:
        "modeconn report-lottery --params {params.cfg:q} --out-dir {params.out_dir:q} --rule report_lottery {input:q} > {log:q} 2>&1"
