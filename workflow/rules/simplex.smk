# simplex family (see its issue): target rule `simplex` lists every report file of the family.


rule simplex:
    input:
        [],
