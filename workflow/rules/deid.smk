# De-identification audit: every readable input file against the collection's profile
# (config `deid`), one job per scan shard, merged into catalog/deid_audit.parquet.


rule deid_audit_shard:
    input:
        out("work/scan/shard-{shard}.parquet"),
    output:
        out("work/deid/shard-{shard}.parquet"),
    log:
        out("logs/deid/shard-{shard}.log"),
    benchmark:
        out("benchmarks/deid/shard-{shard}.tsv")
    conda:
        "../../envs/metsprep.yaml"
    params:
        input_dir=str(INPUT_DIR),
        settings=config["deid"],
    script:
        "../scripts/deid_audit_shard.py"


rule deid_audit:
    input:
        expand(out("work/deid/shard-{shard}.parquet"), shard=range(N_SCAN_SHARDS)),
    output:
        out("catalog/deid_audit.parquet"),
    log:
        out("logs/deid/merge.log"),
    benchmark:
        out("benchmarks/deid/merge.tsv")
    conda:
        "../../envs/metsprep.yaml"
    script:
        "../scripts/deid_audit.py"
