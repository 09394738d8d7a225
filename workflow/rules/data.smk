# Data: each dataset built once into one safetensors file that every job reads.


rule data:
    input:
        DATA_FILE,


rule prepare_data:
    output:
        in_results("data/{dataset}.safetensors"),
    params:
        cfg=params_json(data=True),
        code=code("data"),
    conda:
        ENV
    log:
        in_logs("prepare_data/{dataset}.log"),
    shell:
        "modeconn prepare-data --params {params.cfg:q} --out {output:q} --rule prepare_data > {log:q} 2>&1"
