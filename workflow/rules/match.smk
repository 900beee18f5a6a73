# Group files into series and studies by UID, match each RTSS to its images,
# classify sequences and write one plan per case. A checkpoint: the per-case jobs
# of the later stages are built from its plans.


checkpoint match:
    input:
        inventory=out("catalog/inventory.parquet"),
        rules=package_data_or(config["match"]["sequence_rules"], "sequence_rules.yaml"),
        lexicon=package_data_or(
            config["match"]["sequence_lexicon"], "sequence_lexicon.yaml"
        ),
    output:
        series=out("work/match/series.parquet"),
        cases=out("work/match/cases.parquet"),
        plans=directory(out("work/match/plans")),
    log:
        out("logs/match.log"),
    benchmark:
        out("benchmarks/match.tsv")
    conda:
        "../../envs/metsprep.yaml"
    params:
        input_dir=str(INPUT_DIR),
        settings={
            **setting_with_path(config["match"], "sequence_rules"),
            **setting_with_path(config["match"], "sequence_lexicon"),
            "max_missing_run": config["bids"]["max_missing_run"],
        },
    script:
        "../scripts/match.py"
