# Rigid registration of T1 and T2 onto the T1W+C grid.


rule register_case:
    input:
        bids=case_work("bids.json"),
    output:
        result=case_work("register.json"),
    log:
        out("logs/register/{case_id}.log"),
    benchmark:
        out("benchmarks/register/{case_id}.tsv")
    group:
        "case"
    conda:
        "../../envs/metsprep.yaml"
    threads: config["register"]["threads"]
    params:
        output_dir=output_folder,
        settings=config["register"],
    script:
        "../scripts/register_case.py"
