# neb family: AutoNEB paths between pairs of seeds (Draxler et al. 2018), one job per pair, and the
# report comparing them with the seeds family's linear paths (minimum spanning tree of saddles).
NEB_PAIRS = CFG.neb.chosen_pairs(SEED_PAIRS)
NEB_REPORT = [
    f"reports/neb/{name}"
    for name in ("paths.png", "paths.csv", "saddles.csv", "saddles.md", "mst.csv", "mst.png", "metrics.json", "section.md")
]


rule neb:
    input:
        NEB_REPORT,


rule neb_connect:
    input:
        data=DATA_FILE,
        a=lambda w: POPULATION_DIR[int(w.a)],
        b=lambda w: POPULATION_DIR[int(w.b)],
    output:
        path="results/neb/seed{a}-seed{b}.safetensors",
        points="results/neb/seed{a}-seed{b}.csv",
        cycles="results/neb/seed{a}-seed{b}.json",
    wildcard_constraints:
        a=r"\d+",
        b=r"\d+",
    params:
        cfg=params_json(data=True, model=True, evaluation=True, neb=True),
        code=code("stages.neb"),
    conda:
        ENV
    threads: 1
    resources:
        gpu=GPU,
    log:
        "logs/neb/connect_seed{a}-seed{b}.log",
    shell:
        "modeconn neb-connect --params {params.cfg:q} --data {input.data:q}"
        " --a {input.a:q}/seed{wildcards.a}.safetensors --b {input.b:q}/seed{wildcards.b}.safetensors"
        " --out {output.path:q} --threads {threads} --rule neb_connect --wildcards a={wildcards.a},b={wildcards.b}"
        " > {log:q} 2>&1"


rule report_neb:
    input:
        neb=[f"results/neb/seed{a}-seed{b}.csv" for a, b in NEB_PAIRS],
        linear=[f"results/seeds/pairs/seed{a}-seed{b}.csv" for a, b in NEB_PAIRS],
    output:
        figure=report("reports/neb/paths.png", caption="../report/neb_paths.rst", category="AutoNEB", labels={"what": "NEB vs linear paths"}),
        points="reports/neb/paths.csv",
        table=report("reports/neb/saddles.csv", caption="../report/neb_saddles.rst", category="AutoNEB", labels={"what": "saddle table"}),
        markdown="reports/neb/saddles.md",
        edges="reports/neb/mst.csv",
        mst=report("reports/neb/mst.png", caption="../report/neb_mst.rst", category="AutoNEB", labels={"what": "minimum spanning tree"}),
        metrics="reports/neb/metrics.json",
        section="reports/neb/section.md",
    params:
        cfg=params_json(),
        code=code("report.neb"),
    conda:
        ENV
    log:
        "logs/neb/report.log",
    shell:
        "modeconn report-neb --params {params.cfg:q} --neb {input.neb:q} --linear {input.linear:q}"
        " --out-dir reports/neb --rule report_neb > {log:q} 2>&1"
