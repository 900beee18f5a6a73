"""Stage bids: one case's T1C, T1 and T2 series to NIfTI in the BIDS tree."""
import sys
from pathlib import Path

# Use the library of this checkout even where metsprep is not installed (e.g. --sdm conda).
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from metsprep.logs import start_log  # noqa: E402

start_log(snakemake.log[0])

from metsprep.bids import convert_case  # noqa: E402

convert_case(
    Path(snakemake.input.plan),
    output_dir=Path(snakemake.params.output_dir),
    result_json=Path(snakemake.output.result),
    options={},
)
