"""Stage qc (report): qc/index.html and the cohort figure."""
from pathlib import Path

from _common import start

start(snakemake)

from metsprep.qc import build_report

build_report(
    series_parquet=Path(snakemake.input.series),
    cases_parquet=Path(snakemake.input.cases),
    lesions_parquet=Path(snakemake.input.lesions),
    deid_parquet=Path(snakemake.input.deid),
    output_dir=Path(snakemake.params.output_dir),
    out_html=Path(snakemake.output.html),
    out_summary_png=Path(snakemake.output.summary),
    cohort_figures=[
        ("Lesion frequency in MNI space", Path(snakemake.input.lesion_frequency)),
        ("Lesions across each patient's sessions", Path(snakemake.input.lesion_tracks)),
    ],
)
