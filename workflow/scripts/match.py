"""Stage match: series and studies by UID, RTSS to images, sequences, one plan per case."""
import sys
from pathlib import Path

# Use the library of this checkout even where metsprep is not installed (e.g. --sdm conda).
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from metsprep.logs import start_log  # noqa: E402

start_log(snakemake.log[0])

from metsprep.match import run_match  # noqa: E402

run_match(
    inventory_parquet=Path(snakemake.input.inventory),
    input_dir=Path(snakemake.params.input_dir),
    rules_yaml=Path(snakemake.input.rules),
    options=dict(snakemake.params.options),
    out_series=Path(snakemake.output.series),
    out_cases=Path(snakemake.output.cases),
    plans_dir=Path(snakemake.output.plans),
)
