# FGE and SWA (Garipov et al. 2018; Izmailov et al. 2018): every seed is continued from its own
# checkpoint (fge.start, swa.start; the seeds' training saves them) as one population per method.
FGE_SEED_DIRS = [POPULATION_DIR[s] for s in SEEDS]
# The flatness family measures every FGE snapshot and every SWA solution (two groups of minima).
FLATNESS_MINIMA["fge"] = [in_results(f"fge/networks/seed{s}.cycle{j}.safetensors") for s in SEEDS for j in range(CFG.fge.cycles)]
FLATNESS_MINIMA["swa"] = [in_results(f"swa/networks/seed{s}.safetensors") for s in SEEDS]
DIRECTORY_OUTPUTS.extend([in_results("fge/networks"), in_results("swa/networks")])


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
        networks=directory(in_results("{method}/networks")),
        table=in_results("{method}/{method}.csv"),
    params:
        cfg=lambda w: params_json(data=True, model=True, train=True, evaluation=True, **{w.method: True}),
        code=code("families.fge.stage"),
        seeds=" ".join(map(str, SEEDS)),
        dirs=" ".join(FGE_SEED_DIRS),
    conda:
        ENV
    threads: 1
    # starts a chain of jobs: scheduled before independent short jobs so that both cores stay busy to the end
    priority: 5
    resources:
        gpu=GPU,
    log:
        in_logs("fge/{method}.log"),
    shell:
        "modeconn {wildcards.method} --params {params.cfg:q} --data {input.data:q} --seeds {params.seeds} --seed-dirs {params.dirs}"
        " --out-dir {output.networks:q} --out {output.table:q} --threads {threads} --rule continue_seeds"
        " --wildcards method={wildcards.method} > {log:q} 2>&1"


rule report_fge:
    input:
        fge=in_results("fge/fge.csv"),
        swa=in_results("swa/swa.csv"),
    output:
        report_outputs("fge"),
    params:
        out_dir=output_dir,
        cfg=params_json(data=True, model=True, train=True, fge=True, swa=True),
        code=code("families.fge.report"),
    conda:
        ENV
    log:
        in_logs("fge/report.log"),
    shell:
        "modeconn report-fge --params {params.cfg:q} --out-dir {params.out_dir:q} --rule report_fge"
        " --fge {input.fge:q} --swa {input.swa:q} > {log:q} 2>&1"
