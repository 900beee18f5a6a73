# Group files into series and studies by UID, match each RTSS to its images,
# classify sequences and write one plan per case. A checkpoint: the per-case jobs
# of the later stages are built from its plans.


checkpoint match:
    input:
        inventory=out("catalog/inventory.parquet"),
        rules=config_file(config["match"]["sequence_rules"]),
    output:
        series=out("work/match/series.parquet"),
        cases=out("work/match/cases.parquet"),
        plans=directory(out("work/match/plans")),
    params:
        input_dir=str(INPUT_DIR),
        options={
            "include_unannotated": config["match"]["include_unannotated"],
            "sequence_overrides": config["match"]["sequence_overrides"],
            "geometry_tolerance_mm": config["match"]["geometry_tolerance_mm"],
        },
    log:
        out("logs/match.log"),
    benchmark:
        out("benchmarks/match.tsv")
    script:
        "../scripts/match.py"
