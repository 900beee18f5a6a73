"""Stage catalog: one case's lesion features and case row."""
import sys
from pathlib import Path

# Use the library of this checkout even where metsprep is not installed (e.g. --sdm conda).
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from metsprep.logs import start_log  # noqa: E402

start_log(snakemake.log[0])

from metsprep.catalog import catalog_case  # noqa: E402

catalog_case(
    plan_json=Path(snakemake.input.plan),
    bids_json=Path(snakemake.input.bids),
    rtss_json=Path(snakemake.input.rtss),
    rois_parquet=Path(snakemake.input.rois),
    register_json=Path(snakemake.input.register),
    vocabulary_yaml=Path(snakemake.input.vocabulary),
    output_dir=Path(snakemake.params.output_dir),
    out_lesions=Path(snakemake.output.lesions),
    out_case=Path(snakemake.output.case),
)
