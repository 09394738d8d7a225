# fge family (see its issue): target rule `fge` lists every report file of the family.


rule fge:
    input:
        [],
