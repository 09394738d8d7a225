# simplex family: SPRO simplexes grown from the seeds as one population, ESPRO ensembles
# (Benton et al. 2021), and their report.
SIMPLEX_SEEDS = CFG.simplex.chosen_seeds(SEEDS)
SIMPLEX_REPORT = [
    f"reports/simplex/{name}"
    for name in ("simplex.png", "ensemble.png", "sizes.csv", "sizes.md", "ensemble.md", "points.csv", "ensemble.csv", "metrics.json", "section.md")
]


rule simplex:
    input:
        SIMPLEX_REPORT,


rule simplex_grow:
    input:
        data=DATA_FILE,
        populations=sorted({POPULATION_DIR[s] for s in SIMPLEX_SEEDS}),
    output:
        points="results/simplex/points.csv",
        ensemble="results/simplex/ensemble.csv",
        simplexes=[f"results/simplex/seed{s}.safetensors" for s in SIMPLEX_SEEDS],
    params:
        cfg=params_json(data=True, model=True, evaluation=True, simplex=True),
        checkpoints=" ".join(f"{POPULATION_DIR[s]}/seed{s}.safetensors" for s in SIMPLEX_SEEDS),
        code=code("stages.simplex"),
    conda:
        ENV
    threads: 2
    resources:
        gpu=GPU,
    log:
        "logs/simplex/grow.log",
    shell:
        "modeconn simplex-grow --params {params.cfg:q} --data {input.data:q} --seeds {params.checkpoints}"
        " --out-dir results/simplex --threads {threads} --rule simplex_grow > {log:q} 2>&1"


rule report_simplex:
    input:
        points="results/simplex/points.csv",
        ensemble="results/simplex/ensemble.csv",
    output:
        simplex=report("reports/simplex/simplex.png", caption="../report/simplex_sizes.rst", category="Simplexes", labels={"what": "loss in the simplexes"}),
        ensemble=report("reports/simplex/ensemble.png", caption="../report/simplex_ensemble.rst", category="Simplexes", labels={"what": "ESPRO vs deep ensemble"}),
        sizes=report("reports/simplex/sizes.csv", caption="../report/simplex_sizes.rst", category="Simplexes", labels={"what": "table per simplex size"}),
        sizes_md="reports/simplex/sizes.md",
        ensemble_md="reports/simplex/ensemble.md",
        points="reports/simplex/points.csv",
        ensemble_csv="reports/simplex/ensemble.csv",
        metrics="reports/simplex/metrics.json",
        section="reports/simplex/section.md",
    params:
        cfg=params_json(simplex={"eval_samples": CFG.simplex.eval_samples, "ensemble_samples": CFG.simplex.ensemble_samples}),
        code=code("report.simplex"),
    conda:
        ENV
    log:
        "logs/simplex/report.log",
    shell:
        "modeconn report-simplex --params {params.cfg:q} --points {input.points:q} --ensemble {input.ensemble:q}"
        " --out-dir reports/simplex --rule report_simplex > {log:q} 2>&1"
