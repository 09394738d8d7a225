# Seeds family: independently trained networks, the linear path between every pair, the barrier
# report. Seeds are trained `seeds.population` at a time as one batched population per job.
SEEDS = CFG.seeds.seeds
POPULATIONS = [SEEDS[i : i + CFG.seeds.population] for i in range(0, len(SEEDS), CFG.seeds.population)]
# The directory holding each seed's checkpoints (the output of its population's training job).
POPULATION_DIR = {seed: in_results(f"seeds/population{i}") for i, members in enumerate(POPULATIONS) for seed in members}
SEED_PAIRS = [(a, b) for i, a in enumerate(SEEDS) for b in SEEDS[i + 1 :]]
# What the flatness family measures of this family: every seed, and the linear path between every pair.
FLATNESS_MINIMA["seeds"] = [seed_file(s) for s in SEEDS]
FLATNESS_PATHS["seeds"] = [(seed_file(a), seed_file(b)) for a, b in SEED_PAIRS]
DIRECTORY_OUTPUTS.extend(sorted(set(POPULATION_DIR.values())))


rule seeds:
    input:
        report_files("seeds"),


rule train_seeds:
    input:
        data=DATA_FILE,
    output:
        directory(in_results("seeds/population{population}")),
    params:
        # The seeds also serve as trunks (instability), dense networks (lottery), FGE starts...:
        # they save a checkpoint at every step some family asks for.
        cfg=params_json(data=True, model=True, train=FULL["train"] | {"checkpoint_steps": list(CFG.seed_checkpoint_steps())}, evaluation=True),
        seeds=lambda w: " ".join(map(str, POPULATIONS[int(w.population)])),
        code=code("families.seeds.stage"),
    conda:
        ENV
    threads: 2
    # almost every job waits for the seeds
    priority: 10
    resources:
        gpu=GPU,
    log:
        in_logs("seeds/train_population{population}.log"),
    shell:
        "modeconn train-seeds --params {params.cfg:q} --seeds {params.seeds} --data {input.data:q}"
        " --out-dir {output:q} --threads {threads} --rule train_seeds --wildcards population={wildcards.population}"
        " > {log:q} 2>&1"


rule interpolate_seeds:
    input:
        data=DATA_FILE,
        a=lambda w: POPULATION_DIR[int(w.a)],
        b=lambda w: POPULATION_DIR[int(w.b)],
    output:
        in_results("seeds/pairs/seed{a}-seed{b}.csv"),
    params:
        cfg=params_json(data=True, model=True, evaluation=True, seeds={"interpolation_points": CFG.seeds.interpolation_points}),
        code=code("families.seeds.stage"),
    conda:
        ENV
    threads: 1
    resources:
        gpu=GPU,
    log:
        in_logs("seeds/interpolate_seed{a}-seed{b}.log"),
    shell:
        "modeconn interpolate --params {params.cfg:q} --data {input.data:q}"
        " --a {input.a:q}/seed{wildcards.a}.safetensors --b {input.b:q}/seed{wildcards.b}.safetensors"
        " --out {output:q} --threads {threads} --rule interpolate_seeds --wildcards a={wildcards.a},b={wildcards.b}"
        " > {log:q} 2>&1"


rule report_seeds:
    input:
        [in_results(f"seeds/pairs/seed{a}-seed{b}.csv") for a, b in SEED_PAIRS],
    output:
        report_outputs("seeds"),
    params:
        out_dir=output_dir,
        cfg=params_json(barrier=True),
        code=code("families.seeds.report"),
    conda:
        ENV
    log:
        in_logs("seeds/report.log"),
    shell:
        "modeconn report-seeds --params {params.cfg:q} --out-dir {params.out_dir:q} --rule report_seeds {input:q} > {log:q} 2>&1"
