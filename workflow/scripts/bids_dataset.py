"""Stage bids (dataset files): dataset_description, README, participants."""
from pathlib import Path

from _common import start

start(snakemake)

from metsprep.bids import write_dataset_files

write_dataset_files([Path(p) for p in snakemake.input], Path(snakemake.params.output_dir))
