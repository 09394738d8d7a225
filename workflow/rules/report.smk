# The consolidated report reports/README.md: every registered family's section.md, in registry order.


rule report_readme:
    input:
        [f"reports/{family.name}/section.md" for family in FAMILIES if "section.md" in family.reports],
    output:
        "reports/README.md",
    params:
        cfg=params_json(data=True, model=True, train=True, seeds=True, evaluation=True, barrier=True),
        code=code("consolidated"),
    conda:
        ENV
    log:
        "logs/report/readme.log",
    shell:
        "modeconn report-readme --params {params.cfg:q} --reports reports --out {output:q} --rule report_readme > {log:q} 2>&1"
