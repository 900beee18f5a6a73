"""Stage rtss: one case's RT Structure Set to label map, masks and volumes."""
from pathlib import Path

from _common import start

start(snakemake)

from metsprep.rtss import rasterize_case
from metsprep.settings import RtssSettings

rasterize_case(
    Path(snakemake.input.plan),
    Path(snakemake.input.bids),
    output_dir=Path(snakemake.params.output_dir),
    result_json=Path(snakemake.output.result),
    rois_parquet=Path(snakemake.output.rois),
    contours_parquet=Path(snakemake.output.contours),
    settings=RtssSettings.from_config(snakemake.params.settings),
)
