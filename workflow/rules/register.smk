# Rigid registration of T1 and T2 onto the T1W+C grid.


rule register_case:
    input:
        bids=case_work("bids.json"),
    output:
        result=case_work("register.json"),
    params:
        output_dir=str(OUTPUT_DIR),
        settings=config["register"],
    conda:
        "../../envs/metsprep.yaml"
    log:
        out("logs/register/{case_id}.log"),
    benchmark:
        out("benchmarks/register/{case_id}.tsv")
    threads: config["register"]["threads"]
    group:
        "case"
    script:
        "../scripts/register_case.py"
