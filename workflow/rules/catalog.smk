# Lesion features per case, then the Parquet catalog of series, cases and lesions.


rule catalog_case:
    input:
        plan=out("work/match/plans/{case_id}.json"),
        bids=case_work("bids.json"),
        rtss=case_work("rtss.json"),
        rois=case_work("rois.parquet"),
        register=case_work("register.json"),
        standard_space=case_work("standard_space.json"),
        vocabulary=package_data_or(
            config["location"]["vocabulary"], "location_vocabulary.yaml"
        ),
    output:
        lesions=case_work("lesions.parquet"),
        case=case_work("case.json"),
    log:
        out("logs/catalog/{case_id}.log"),
    benchmark:
        out("benchmarks/catalog/{case_id}.tsv")
    group:
        "case"
    conda:
        "../../envs/metsprep.yaml"
    params:
        output_dir=output_folder,
        location=setting_with_path(config["location"], "vocabulary"),
    script:
        "../scripts/catalog_case.py"


rule catalog:
    input:
        inventory=out("catalog/inventory.parquet"),
        series=out("work/match/series.parquet"),
        cases=out("work/match/cases.parquet"),
        case_results=per_case("case.json"),
        lesions=per_case("lesions.parquet"),
        participants=out("bids/participants.tsv"),
        ratings=get_ratings(),
    output:
        series=out("catalog/series.parquet"),
        cases=out("catalog/cases.parquet"),
        lesions=out("catalog/lesions.parquet"),
        dictionary=out("catalog/README.md"),
    log:
        out("logs/catalog/merge.log"),
    benchmark:
        out("benchmarks/catalog/merge.tsv")
    conda:
        "../../envs/metsprep.yaml"
    params:
        config=config,
    script:
        "../scripts/catalog.py"
