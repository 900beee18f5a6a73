# Each T1W+C fitted to the MNI152 2009a template; the cohort's lesion-frequency map.


rule standard_space_case:
    input:
        bids=case_work("bids.json"),
    output:
        result=case_work("standard_space.json"),
    log:
        out("logs/standard_space/{case_id}.log"),
    benchmark:
        out("benchmarks/standard_space/{case_id}.tsv")
    group:
        "case"
    conda:
        "../../envs/metsprep.yaml"
    params:
        output_dir=output_folder,
        settings=config["standard_space"],
    script:
        "../scripts/standard_space_case.py"


rule lesion_frequency:
    input:
        cases=out("catalog/cases.parquet"),
    output:
        nifti=out(LESION_FREQUENCY_MAP),
        sidecar=out(LESION_FREQUENCY_MAP.replace(".nii.gz", ".json")),
        figure=report(
            out("qc/figures/lesion_frequency.png"),
            caption="../report/qc_lesion_frequency.rst",
            category="Cohort",
        ),
    log:
        out("logs/standard_space/lesion_frequency.log"),
    benchmark:
        out("benchmarks/standard_space/lesion_frequency.tsv")
    conda:
        "../../envs/metsprep.yaml"
    params:
        output_dir=output_folder,
    script:
        "../scripts/lesion_frequency.py"
