"""Stage rtss: one case's RT Structure Set to label map, masks and volumes."""
import sys
from pathlib import Path

# Use the library of this checkout even where metsprep is not installed (e.g. --sdm conda).
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from metsprep.logs import start_log  # noqa: E402

start_log(snakemake.log[0])

from metsprep.rtss import rasterize_case  # noqa: E402

rasterize_case(
    Path(snakemake.input.plan),
    Path(snakemake.input.bids),
    output_dir=Path(snakemake.params.output_dir),
    result_json=Path(snakemake.output.result),
    rois_parquet=Path(snakemake.output.rois),
    contours_parquet=Path(snakemake.output.contours),
    options=dict(snakemake.params.options),
)
