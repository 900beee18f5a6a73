# Inventory of every input file: headers only, sharded over parallel jobs.


rule scan_shard:
    input:
        get_input_dir_marker,
    output:
        out("work/scan/shard-{shard}.parquet"),
    log:
        out("logs/scan/shard-{shard}.log"),
    benchmark:
        out("benchmarks/scan/shard-{shard}.tsv")
    conda:
        "../../envs/metsprep.yaml"
    params:
        input_dir=str(INPUT_DIR),
        n_shards=N_SCAN_SHARDS,
    script:
        "../scripts/scan_shard.py"


rule scan:
    input:
        expand(out("work/scan/shard-{shard}.parquet"), shard=range(N_SCAN_SHARDS)),
    output:
        out("catalog/inventory.parquet"),
    log:
        out("logs/scan/merge.log"),
    benchmark:
        out("benchmarks/scan/merge.tsv")
    conda:
        "../../envs/metsprep.yaml"
    script:
        "../scripts/scan.py"
