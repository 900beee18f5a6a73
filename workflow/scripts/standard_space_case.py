"""Stage standard_space: one case's T1W+C fitted to the MNI template."""
from pathlib import Path

from _common import start

start(snakemake)

from metsprep.settings import StandardSpaceSettings
from metsprep.standard_space import standard_space_case

standard_space_case(
    Path(snakemake.input.bids),
    output_dir=Path(snakemake.params.output_dir),
    result_json=Path(snakemake.output.result),
    settings=StandardSpaceSettings.from_config(snakemake.params.settings),
)
