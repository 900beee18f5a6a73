"""Stage register: one case's T1 and T2 rigidly onto the T1W+C grid."""
import sys
from pathlib import Path

# Use the library of this checkout even where metsprep is not installed (e.g. --sdm conda).
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from metsprep.logs import start_log  # noqa: E402

start_log(snakemake.log[0])

from metsprep.register import register_case  # noqa: E402

register_case(
    Path(snakemake.input.bids),
    output_dir=Path(snakemake.params.output_dir),
    result_json=Path(snakemake.output.result),
    settings=dict(snakemake.params.settings),
)
