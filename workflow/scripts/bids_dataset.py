"""Stage bids: dataset_description.json, participants.tsv and the derivatives description."""
import sys
from pathlib import Path

# Use the library of this checkout even where metsprep is not installed (e.g. --sdm conda).
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from metsprep.logs import start_log  # noqa: E402

start_log(snakemake.log[0])

from metsprep.bids import write_dataset_files  # noqa: E402

write_dataset_files([Path(p) for p in snakemake.input], Path(snakemake.params.output_dir))
