# flatness family (see its issue): target rule `flatness` lists every report file of the family.


rule flatness:
    input:
        [],
