"""Stage qc: the HTML report."""
import sys
from pathlib import Path

# Use the library of this checkout even where metsprep is not installed (e.g. --sdm conda).
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from metsprep.logs import start_log  # noqa: E402

start_log(snakemake.log[0])

from metsprep.qc import build_report  # noqa: E402

build_report(
    series_parquet=Path(snakemake.input.series),
    cases_parquet=Path(snakemake.input.cases),
    lesions_parquet=Path(snakemake.input.lesions),
    output_dir=Path(snakemake.params.output_dir),
    out_html=Path(snakemake.output.html),
    out_summary_png=Path(snakemake.output.summary),
)
