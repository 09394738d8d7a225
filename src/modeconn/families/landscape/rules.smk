# landscape family (Li et al. 2018): filter-normalised 1-D / 2-D landscapes around chosen seeds and
# the 1-D landscape on the line through chosen pairs of seeds.
# name -> the minimum drawn around; name -> the two minima of a line through both.
LANDSCAPE_CENTERS = {f"seed{s}": seed_file(s) for s in CFG.landscape.chosen_centers(SEEDS)}
LANDSCAPE_PAIRS = {f"seed{a}-seed{b}": (seed_file(a), seed_file(b)) for a, b in CFG.landscape.chosen_pairs(SEED_PAIRS)}


rule landscape:
    input:
        report_files("landscape"),


rule landscape_directions:
    input:
        lambda w: needed(LANDSCAPE_CENTERS[w.center]),
    output:
        in_results("landscape/{center}/directions.safetensors"),
    params:
        cfg=params_json(model=True, landscape={k: FULL["landscape"][k] for k in ("seed", "bias_and_norm")}),
        center=lambda w: LANDSCAPE_CENTERS[w.center],
        code=code("families.landscape.stage"),
    conda:
        ENV
    threads: 1
    resources:
        gpu=GPU,
    log:
        in_logs("landscape/directions_{center}.log"),
    shell:
        "modeconn landscape-directions --params {params.cfg:q} --center {params.center:q} --out {output:q}"
        " --threads {threads} --rule landscape_directions --wildcards center={wildcards.center} > {log:q} 2>&1"


rule landscape_around:
    input:
        data=DATA_FILE,
        center=lambda w: needed(LANDSCAPE_CENTERS[w.center]),
        directions=in_results("landscape/{center}/directions.safetensors"),
    output:
        in_results("landscape/{center}/surface{dims}d.csv"),
    params:
        cfg=params_json(data=True, model=True, evaluation=True, landscape=True),
        center=lambda w: LANDSCAPE_CENTERS[w.center],
        code=code("families.landscape.stage"),
    conda:
        ENV
    threads: 1
    resources:
        gpu=GPU,
    log:
        in_logs("landscape/around_{center}_{dims}d.log"),
    shell:
        "modeconn landscape-around --params {params.cfg:q} --data {input.data:q} --center {params.center:q}"
        " --directions {input.directions:q} --dims {wildcards.dims} --out {output:q} --threads {threads}"
        " --rule landscape_around --wildcards center={wildcards.center},dims={wildcards.dims} > {log:q} 2>&1"


rule landscape_between:
    input:
        data=DATA_FILE,
        networks=lambda w: sorted({needed(f) for f in LANDSCAPE_PAIRS[w.pair]}),
    output:
        in_results("landscape/between/{pair}.csv"),
    params:
        cfg=params_json(data=True, model=True, evaluation=True, landscape=True),
        a=lambda w: LANDSCAPE_PAIRS[w.pair][0],
        b=lambda w: LANDSCAPE_PAIRS[w.pair][1],
        code=code("families.landscape.stage"),
    conda:
        ENV
    threads: 1
    resources:
        gpu=GPU,
    log:
        in_logs("landscape/between_{pair}.log"),
    shell:
        "modeconn landscape-between --params {params.cfg:q} --data {input.data:q} --a {params.a:q} --b {params.b:q}"
        " --out {output:q} --threads {threads} --rule landscape_between --wildcards pair={wildcards.pair} > {log:q} 2>&1"


rule report_landscape:
    input:
        around=[in_results(f"landscape/{c}/surface{d}d.csv") for c in LANDSCAPE_CENTERS for d in (1, 2)],
        between=[in_results(f"landscape/between/{p}.csv") for p in LANDSCAPE_PAIRS],
    output:
        report_outputs("landscape"),
    params:
        out_dir=output_dir,
        cfg=params_json(landscape=True),
        code=code("families.landscape.report"),
    conda:
        ENV
    log:
        in_logs("landscape/report.log"),
    shell:
        "modeconn report-landscape --params {params.cfg:q} --around {input.around:q} --between {input.between:q}"
        " --out-dir {params.out_dir:q} --rule report_landscape > {log:q} 2>&1"
