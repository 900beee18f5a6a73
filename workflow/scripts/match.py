"""Stage match: series and studies by UID, RTSS to images, sequences, one plan per case."""
from pathlib import Path

from _common import start

start(snakemake)

from metsprep.match import run_match
from metsprep.settings import MatchSettings

run_match(
    inventory_parquet=Path(snakemake.input.inventory),
    input_dir=Path(snakemake.params.input_dir),
    settings=MatchSettings.from_config(snakemake.params.settings),
    out_series=Path(snakemake.output.series),
    out_cases=Path(snakemake.output.cases),
    plans_dir=Path(snakemake.output.plans),
)
