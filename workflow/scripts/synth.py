"""Stage synth: generate the synthetic demo cohort."""
import sys
from pathlib import Path

# Use the library of this checkout even where metsprep is not installed (e.g. --sdm conda).
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from metsprep.logs import start_log  # noqa: E402

start_log(snakemake.log[0])

from metsprep.synth import generate_cohort  # noqa: E402

generate_cohort(
    Path(snakemake.params.root),
    n_cases=snakemake.params.n_cases,
    seed=snakemake.params.seed,
    layout=snakemake.params.layout,
)
