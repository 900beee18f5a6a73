# The QC report: per-case figures, then one HTML page.


rule qc_case:
    input:
        case=case_work("case.json"),
        lesions=case_work("lesions.parquet"),
    output:
        lesions=report(
            out("qc/figures/{case_id}_lesions.png"),
            caption="../report/qc_lesions.rst",
            category="Lesions",
            subcategory="{case_id}",
        ),
        registration=report(
            out("qc/figures/{case_id}_registration.png"),
            caption="../report/qc_registration.rst",
            category="Registration",
            subcategory="{case_id}",
        ),
        page=out("qc/cases/{case_id}.html"),
    log:
        out("logs/qc/{case_id}.log"),
    benchmark:
        out("benchmarks/qc/{case_id}.tsv")
    group:
        "case"
    conda:
        "../../envs/metsprep.yaml"
    params:
        output_dir=output_folder,
    script:
        "../scripts/qc_case.py"


rule qc_report:
    input:
        series=out("catalog/series.parquet"),
        cases=out("catalog/cases.parquet"),
        lesions=out("catalog/lesions.parquet"),
        deid=out("catalog/deid_audit.parquet"),
        figures=for_each_case("qc/figures/{case_id}_lesions.png"),
        pages=for_each_case("qc/cases/{case_id}.html"),
        lesion_frequency=out("qc/figures/lesion_frequency.png"),
        lesion_tracks=out("qc/figures/lesion_tracks.png"),
    output:
        html=out("qc/index.html"),
        assets=[out(f"qc/assets/{name}") for name in QC_ASSETS],
        summary=report(
            out("qc/figures/cohort_summary.png"),
            caption="../report/qc_cohort.rst",
            category="Cohort",
        ),
    log:
        out("logs/qc/report.log"),
    benchmark:
        out("benchmarks/qc/report.tsv")
    conda:
        "../../envs/metsprep.yaml"
    params:
        output_dir=output_folder,
    script:
        "../scripts/qc_report.py"
