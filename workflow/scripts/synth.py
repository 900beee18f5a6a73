"""Stage synth: the synthetic demo cohort (only when input_dir is empty)."""
from pathlib import Path

from _common import start

start(snakemake)

from metsprep.synth import generate_cohort

generate_cohort(
    Path(snakemake.params.root),
    n_cases=snakemake.params.n_cases,
    seed=snakemake.params.seed,
    layout=snakemake.params.layout,
)
