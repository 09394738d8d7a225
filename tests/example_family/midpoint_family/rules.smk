# The midpoint family's rules: its target rule (named after it) and its report rule.


rule midpoint:
    input:
        report_files("midpoint"),


rule report_midpoint:
    input:
        [in_results(f"seeds/pairs/seed{a}-seed{b}.csv") for a, b in SEED_PAIRS],
    output:
        report_outputs("midpoint"),
    params:
        cfg=params_json(midpoint=True),
        out_dir=output_dir,
    conda:
        ENV
    log:
        in_logs("midpoint/report.log"),
    shell:
        "modeconn report-midpoint --params {params.cfg:q} --out-dir {params.out_dir:q} --rule report_midpoint {input:q} > {log:q} 2>&1"
