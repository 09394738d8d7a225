# FGE and SWA (Garipov et al. 2018; Izmailov et al. 2018): every seed is continued from its own
# checkpoint (fge.start, swa.start; the seeds' training saves them) as one population per method.
FGE_SEED_DIRS = [POPULATION_DIR[s] for s in SEEDS]
# The flatness family measures every FGE snapshot and every SWA solution (two groups of minima).
FLATNESS_MINIMA["fge"] = [f"results/fge/networks/seed{s}.cycle{j}.safetensors" for s in SEEDS for j in range(CFG.fge.cycles)]
FLATNESS_MINIMA["swa"] = [f"results/swa/networks/seed{s}.safetensors" for s in SEEDS]
DIRECTORY_OUTPUTS.extend(["results/fge/networks", "results/swa/networks"])


rule fge:
    input:
        report_files("fge"),


rule continue_seeds:
    # FGE (method fge) and SWA (method swa) both continue every seed from its own checkpoint at
    # <method>.start; one job per method, its networks in results/<method>/networks/.
    input:
        data=DATA_FILE,
        seeds=sorted(set(FGE_SEED_DIRS)),
    output:
        networks=directory("results/{method}/networks"),
        table="results/{method}/{method}.csv",
    params:
        cfg=lambda w: params_json(data=True, model=True, train=True, evaluation=True, **{w.method: True}),
        code=code("families.fge.stage"),
        seeds=" ".join(map(str, SEEDS)),
        dirs=" ".join(FGE_SEED_DIRS),
    conda:
        ENV
    threads: 2
    resources:
        gpu=GPU,
    log:
        "logs/fge/{method}.log",
    shell:
        "modeconn {wildcards.method} --params {params.cfg:q} --data {input.data:q} --seeds {params.seeds} --seed-dirs {params.dirs}"
        " --out-dir {output.networks:q} --out {output.table:q} --threads {threads} --rule continue_seeds"
        " --wildcards method={wildcards.method} > {log:q} 2>&1"


rule report_fge:
    input:
        fge="results/fge/fge.csv",
        swa="results/swa/swa.csv",
    output:
        report_outputs("fge"),
    params:
        cfg=params_json(data=True, model=True, train=True, fge=True, swa=True),
        code=code("families.fge.report"),
    conda:
        ENV
    log:
        "logs/fge/report.log",
    shell:
        "modeconn report-fge --params {params.cfg:q} --out-dir reports/fge --rule report_fge"
        " --fge {input.fge:q} --swa {input.swa:q} > {log:q} 2>&1"
