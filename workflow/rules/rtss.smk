# RT Structure Set contours to lesion label maps, masks and planimetric volumes.


rule rtss_case:
    input:
        plan=out("work/match/plans/{case_id}.json"),
        bids=case_work("bids.json"),
    output:
        result=case_work("rtss.json"),
        rois=case_work("rois.parquet"),
        contours=case_work("contours.parquet"),
    log:
        out("logs/rtss/{case_id}.log"),
    benchmark:
        out("benchmarks/rtss/{case_id}.tsv")
    group:
        "case"
    conda:
        "../../envs/metsprep.yaml"
    params:
        output_dir=output_folder,
        settings=config["rtss"],
    script:
        "../scripts/rtss_case.py"
