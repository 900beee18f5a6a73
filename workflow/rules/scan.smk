# Inventory of every input file: one walk of the folder, then headers only, sharded over
# parallel jobs.


rule scan_list:
    input:
        get_input_dir_marker,
    output:
        out("work/scan/files.parquet"),
    log:
        out("logs/scan/list.log"),
    benchmark:
        out("benchmarks/scan/list.tsv")
    conda:
        "../../envs/metsprep.yaml"
    params:
        input_dir=str(INPUT_DIR),
    script:
        "../scripts/scan_list.py"


rule scan_shard:
    input:
        out("work/scan/files.parquet"),
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
