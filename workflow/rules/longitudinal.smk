# The same lesion across a patient's sessions: session registrations, then the tracks.


rule session_registration:
    input:
        bids=case_work("bids.json"),
        earlier=get_earlier_session_bids,
    output:
        result=case_work("session_registration.json"),
    log:
        out("logs/longitudinal/{case_id}.log"),
    benchmark:
        out("benchmarks/longitudinal/{case_id}.tsv")
    group:
        "case"
    conda:
        "../../envs/metsprep.yaml"
    threads: config["register"]["threads"]
    params:
        output_dir=output_folder,
        register=config["register"],
        settings=config["longitudinal"],
    script:
        "../scripts/session_registration.py"


rule lesion_tracks:
    input:
        cases=out("catalog/cases.parquet"),
        lesions=out("catalog/lesions.parquet"),
        sessions=get_session_registrations,
    output:
        tracks=out("catalog/lesion_tracks.parquet"),
        figure=report(
            out("qc/figures/lesion_tracks.png"),
            caption="../report/qc_lesion_tracks.rst",
            category="Cohort",
        ),
    log:
        out("logs/longitudinal/tracks.log"),
    benchmark:
        out("benchmarks/longitudinal/tracks.tsv")
    conda:
        "../../envs/metsprep.yaml"
    params:
        settings=config["longitudinal"],
    script:
        "../scripts/lesion_tracks.py"
