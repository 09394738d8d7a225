# simplex family: SPRO simplexes grown from the seeds as one population, ESPRO ensembles
# (Benton et al. 2021), and their report.
SIMPLEX_SEEDS = CFG.simplex.chosen_seeds(SEEDS)
# The flatness family measures at the vertices and the centre of every simplex.
FLATNESS_PATHS["simplex"] = [in_results(f"simplex/seed{s}.safetensors") for s in SIMPLEX_SEEDS]


rule simplex:
    input:
        report_files("simplex"),


rule simplex_grow:
    input:
        data=DATA_FILE,
        populations=sorted({POPULATION_DIR[s] for s in SIMPLEX_SEEDS}),
    output:
        points=in_results("simplex/points.csv"),
        ensemble=in_results("simplex/ensemble.csv"),
        simplexes=[in_results(f"simplex/seed{s}.safetensors") for s in SIMPLEX_SEEDS],
    params:
        cfg=params_json(data=True, model=True, evaluation=True, simplex=True),
        checkpoints=" ".join(f"{POPULATION_DIR[s]}/seed{s}.safetensors" for s in SIMPLEX_SEEDS),
        code=code("families.simplex.stage"),
        out_dir=output_dir,
    conda:
        ENV
    threads: 1
    # starts a chain of jobs: scheduled before independent short jobs so that both cores stay busy to the end
    priority: 5
    resources:
        gpu=GPU,
    log:
        in_logs("simplex/grow.log"),
    shell:
        "modeconn simplex-grow --params {params.cfg:q} --data {input.data:q} --seeds {params.checkpoints}"
        " --out-dir {params.out_dir:q} --threads {threads} --rule simplex_grow > {log:q} 2>&1"


rule report_simplex:
    input:
        points=in_results("simplex/points.csv"),
        ensemble=in_results("simplex/ensemble.csv"),
    output:
        report_outputs("simplex"),
    params:
        out_dir=output_dir,
        cfg=params_json(simplex={"eval_samples": CFG.simplex.eval_samples, "ensemble_samples": CFG.simplex.ensemble_samples}),
        code=code("families.simplex.report"),
    conda:
        ENV
    log:
        in_logs("simplex/report.log"),
    shell:
        "modeconn report-simplex --params {params.cfg:q} --points {input.points:q} --ensemble {input.ensemble:q}"
        " --out-dir {params.out_dir:q} --rule report_simplex > {log:q} 2>&1"
