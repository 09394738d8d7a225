# instability family (see its issue): target rule `instability` lists every report file of the family.


rule instability:
    input:
        [],
