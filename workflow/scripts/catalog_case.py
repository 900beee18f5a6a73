"""Stage catalog (per case): lesion features and the case row."""
from pathlib import Path

from _common import start

start(snakemake)

from metsprep.catalog.case import catalog_case
from metsprep.settings import LocationSettings

catalog_case(
    plan_json=Path(snakemake.input.plan),
    bids_json=Path(snakemake.input.bids),
    rtss_json=Path(snakemake.input.rtss),
    rois_parquet=Path(snakemake.input.rois),
    register_json=Path(snakemake.input.register),
    standard_space_json=Path(snakemake.input.standard_space),
    settings=LocationSettings.from_config(snakemake.params.location),
    output_dir=Path(snakemake.params.output_dir),
    out_lesions=Path(snakemake.output.lesions),
    out_case=Path(snakemake.output.case),
)
