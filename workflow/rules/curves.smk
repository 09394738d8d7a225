# curves family (see its issue): target rule `curves` lists every report file of the family.


rule curves:
    input:
        [],
