# Patient-level splits, then model-training exports (nnU-Net v2, MONAI) and the dataset card.


rule split_ledger:
    # The first split, kept: its catalog inputs are ancient, so cases added or changed later
    # do not rerun it and its patients keep their sets (docs/exports.md). New split settings
    # or a new `splits.frozen` file do rerun it.
    input:
        cases=ancient(out("catalog/cases.parquet")),
        series=ancient(out("catalog/series.parquet")),
        frozen=get_frozen_split(),
    output:
        ledger=out("catalog/split_ledger.parquet"),
    log:
        out("logs/export/split_ledger.log"),
    conda:
        "../../envs/metsprep.yaml"
    params:
        settings=config["splits"],
    script:
        "../scripts/splits.py"


rule splits:
    input:
        cases=out("catalog/cases.parquet"),
        series=out("catalog/series.parquet"),
        frozen=out("catalog/split_ledger.parquet"),
    output:
        splits=out("catalog/splits.parquet"),
    log:
        out("logs/export/splits.log"),
    conda:
        "../../envs/metsprep.yaml"
    params:
        settings=config["splits"],
    script:
        "../scripts/splits.py"


rule export_case:
    input:
        case=case_work("case.json"),
    output:
        result=case_work("export.json"),
        files=directory(out("exports/cases/{case_id}")),
    log:
        out("logs/export/{case_id}.log"),
    benchmark:
        out("benchmarks/export/{case_id}.tsv")
    group:
        "case"
    conda:
        "../../envs/metsprep.yaml"
    params:
        output_dir=output_folder,
        settings=config["export"],
    script:
        "../scripts/export_case.py"


rule export_nnunet:
    input:
        results=per_case("export.json"),
        splits=out("catalog/splits.parquet"),
        cases=out("catalog/cases.parquet"),
    output:
        dataset=directory(out(NNUNET_DATASET_DIR)),
    log:
        out("logs/export/nnunet.log"),
    benchmark:
        out("benchmarks/export/nnunet.tsv")
    conda:
        "../../envs/metsprep.yaml"
    params:
        output_dir=output_folder,
        settings=config["export"],
        splits=config["splits"],
    script:
        "../scripts/export_nnunet.py"


rule export_monai:
    input:
        results=per_case("export.json"),
        splits=out("catalog/splits.parquet"),
        cases=out("catalog/cases.parquet"),
    output:
        datalists=MONAI_DATALISTS,
    log:
        out("logs/export/monai.log"),
    conda:
        "../../envs/metsprep.yaml"
    params:
        output_dir=output_folder,
        splits=config["splits"],
    script:
        "../scripts/export_monai.py"


rule export_table:
    input:
        results=per_case("export.json"),
        splits=out("catalog/splits.parquet"),
        cases=out("catalog/cases.parquet"),
    output:
        table=out("catalog/exports.parquet"),
    log:
        out("logs/export/table.log"),
    conda:
        "../../envs/metsprep.yaml"
    params:
        nnunet_dataset_dir=NNUNET_DATASET_DIR if config["export"]["nnunet"] else "",
    script:
        "../scripts/export_table.py"


rule dataset_card:
    input:
        **{table: out(f"catalog/{table}.parquet") for table in CATALOG_TABLES},
    output:
        card=out("DATASET_CARD.md"),
        croissant=out("croissant.json"),
    log:
        out("logs/export/dataset_card.log"),
    conda:
        "../../envs/metsprep.yaml"
    params:
        output_dir=output_folder,
        title=config["export"]["dataset_name"],
    script:
        "../scripts/dataset_card.py"
