# neb family (see its issue): target rule `neb` lists every report file of the family.


rule neb:
    input:
        [],
