"""Stage qc (per case): lesion and registration figures."""
from pathlib import Path

from _common import start

start(snakemake)

from metsprep.qc import case_figures

case_figures(
    case_json=Path(snakemake.input.case),
    lesions_parquet=Path(snakemake.input.lesions),
    output_dir=Path(snakemake.params.output_dir),
    out_lesions_png=Path(snakemake.output.lesions),
    out_registration_png=Path(snakemake.output.registration),
    out_page=Path(snakemake.output.page),
)
