# The consolidated report reports/README.md: every registered family's section.md, in registry order.


rule report_readme:
    input:
        [in_reports(f"{family.name}/section.md") for family in FAMILIES if "section.md" in family.reports],
    output:
        in_reports("README.md"),
    params:
        cfg=params_json(data=True, model=True, train=True, seeds=True, evaluation=True, barrier=True),
        code=code("consolidated"),
        reports=output_dir,
    conda:
        ENV
    log:
        in_logs("report/readme.log"),
    shell:
        "modeconn report-readme --params {params.cfg:q} --reports {params.reports:q} --out {output:q} --rule report_readme > {log:q} 2>&1"
