# flatness family: Hessian trace and extreme eigenvalues at the minima and along the paths that the
# other families declare in FLATNESS_MINIMA / FLATNESS_PATHS (common.smk; each family's rules.smk
# adds its own groups, so this file lists no family). One curvature job per table and group.
CURVATURE = {"minima": FLATNESS_MINIMA, "paths": FLATNESS_PATHS}
CURVATURE_FLAG = {"minima": "--minimum", "paths": "--path"}


rule flatness:
    input:
        report_files("flatness"),


rule curvature:
    input:
        data=DATA_FILE,
        networks=lambda w: sorted({needed(f) for item in CURVATURE[w.table][w.group] for f in path_files(item)}),
    output:
        in_results("flatness/{table}/{group}.csv"),
    params:
        cfg=params_json(data=True, model=True, evaluation=True, flatness=True),
        specs=lambda w: " ".join(f"{CURVATURE_FLAG[w.table]} {path_spec(w.group, item)}" for item in CURVATURE[w.table][w.group]),
        code=code("families.flatness.stage"),
    conda:
        ENV
    threads: 1
    # the longest single jobs; starting them early keeps the run's tail short
    priority: 3
    resources:
        gpu=GPU,
    log:
        in_logs("flatness/curvature_{table}_{group}.log"),
    # OPENBLAS_NUM_THREADS: ARPACK's own linear algebra keeps to the job's threads too
    shell:
        "OPENBLAS_NUM_THREADS={threads} modeconn curvature --params {params.cfg:q} --data {input.data:q} {params.specs} --out {output:q}"
        " --threads {threads} --rule curvature --wildcards table={wildcards.table},group={wildcards.group} > {log:q} 2>&1"


rule report_flatness:
    input:
        [in_results(f"flatness/{table}/{group}.csv") for table, groups in CURVATURE.items() for group in groups],
    output:
        report_outputs("flatness"),
    params:
        out_dir=output_dir,
        cfg=params_json(),
        code=code("families.flatness.report"),
    conda:
        ENV
    log:
        in_logs("flatness/report.log"),
    shell:
        "modeconn report-flatness --params {params.cfg:q} --out-dir {params.out_dir:q} --rule report_flatness {input:q} > {log:q} 2>&1"
