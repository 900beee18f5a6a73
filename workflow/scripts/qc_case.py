"""Stage qc: one case's lesion and registration figures."""
import sys
from pathlib import Path

# Use the library of this checkout even where metsprep is not installed (e.g. --sdm conda).
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from metsprep.logs import start_log  # noqa: E402

start_log(snakemake.log[0])

from metsprep.qc import case_figures  # noqa: E402

case_figures(
    case_json=Path(snakemake.input.case),
    lesions_parquet=Path(snakemake.input.lesions),
    output_dir=Path(snakemake.params.output_dir),
    out_lesions_png=Path(snakemake.output.lesions),
    out_registration_png=Path(snakemake.output.registration),
)
