# neb family: AutoNEB paths between pairs of seeds (Draxler et al. 2018), one job per pair, and the
# report comparing them with the seeds family's linear paths (minimum spanning tree of saddles).
NEB_PAIRS = CFG.neb.chosen_pairs(SEED_PAIRS)
# The flatness family measures along every AutoNEB path.
FLATNESS_PATHS["neb"] = [in_results(f"neb/seed{a}-seed{b}.safetensors") for a, b in NEB_PAIRS]


rule neb:
    input:
        report_files("neb"),


rule neb_connect:
    input:
        data=DATA_FILE,
        a=lambda w: POPULATION_DIR[int(w.a)],
        b=lambda w: POPULATION_DIR[int(w.b)],
    output:
        path=in_results("neb/seed{a}-seed{b}.safetensors"),
        points=in_results("neb/seed{a}-seed{b}.csv"),
        cycles=in_results("neb/seed{a}-seed{b}.json"),
    params:
        cfg=params_json(data=True, model=True, evaluation=True, neb=True),
        code=code("families.neb.stage"),
    conda:
        ENV
    threads: 1
    # feeds a curvature job of 30 networks (the run's longest): done early, that job does not end the run alone
    priority: 4
    resources:
        gpu=GPU,
    log:
        in_logs("neb/connect_seed{a}-seed{b}.log"),
    shell:
        "modeconn neb-connect --params {params.cfg:q} --data {input.data:q}"
        " --a {input.a:q}/seed{wildcards.a}.safetensors --b {input.b:q}/seed{wildcards.b}.safetensors"
        " --out {output.path:q} --threads {threads} --rule neb_connect --wildcards a={wildcards.a},b={wildcards.b}"
        " > {log:q} 2>&1"


rule report_neb:
    input:
        neb=[in_results(f"neb/seed{a}-seed{b}.csv") for a, b in NEB_PAIRS],
        linear=[in_results(f"seeds/pairs/seed{a}-seed{b}.csv") for a, b in NEB_PAIRS],
    output:
        report_outputs("neb"),
    params:
        out_dir=output_dir,
        cfg=params_json(barrier=True),
        code=code("families.neb.report"),
    conda:
        ENV
    log:
        in_logs("neb/report.log"),
    shell:
        "modeconn report-neb --params {params.cfg:q} --neb {input.neb:q} --linear {input.linear:q}"
        " --out-dir {params.out_dir:q} --rule report_neb > {log:q} 2>&1"
