# DICOM series to NIfTI in a BIDS layout: one job per case, then the dataset files.


rule bids_case:
    input:
        plan=out("work/match/plans/{case_id}.json"),
    output:
        result=case_work("bids.json"),
    log:
        out("logs/bids/{case_id}.log"),
    benchmark:
        out("benchmarks/bids/{case_id}.tsv")
    group:
        "case"
    conda:
        "../../envs/metsprep.yaml"
    params:
        output_dir=output_folder,
        settings=config["bids"],
    script:
        "../scripts/bids_case.py"


rule bids_dataset:
    input:
        per_case("bids.json"),
    output:
        description=out("bids/dataset_description.json"),
        participants=out("bids/participants.tsv"),
        derivatives=out("bids/derivatives/metsprep/dataset_description.json"),
        derivatives_readme=out("bids/derivatives/metsprep/README"),
        derivatives_bidsignore=out("bids/derivatives/metsprep/.bidsignore"),
        readme=out("bids/README"),
        participants_json=out("bids/participants.json"),
    log:
        out("logs/bids/dataset.log"),
    benchmark:
        out("benchmarks/bids/dataset.tsv")
    conda:
        "../../envs/metsprep.yaml"
    params:
        output_dir=output_folder,
    script:
        "../scripts/bids_dataset.py"
