# DICOM series to NIfTI in a BIDS layout: one job per case, then the dataset files.


rule bids_case:
    input:
        plan=out("work/match/plans/{case_id}.json"),
    output:
        result=case_work("bids.json"),
    params:
        output_dir=str(OUTPUT_DIR),
        settings=config["bids"],
    conda:
        "../../envs/metsprep.yaml"
    log:
        out("logs/bids/{case_id}.log"),
    benchmark:
        out("benchmarks/bids/{case_id}.tsv")
    group:
        "case"
    script:
        "../scripts/bids_case.py"


rule bids_dataset:
    input:
        per_case("bids.json"),
    output:
        description=out("bids/dataset_description.json"),
        participants=out("bids/participants.tsv"),
        derivatives=out("bids/derivatives/metsprep/dataset_description.json"),
    params:
        output_dir=str(OUTPUT_DIR),
    conda:
        "../../envs/metsprep.yaml"
    log:
        out("logs/bids/dataset.log"),
    benchmark:
        out("benchmarks/bids/dataset.tsv")
    script:
        "../scripts/bids_dataset.py"
