"""Stage scan (list): the one walk of the input folder, shared out by the shards."""
from pathlib import Path

from _common import start

start(snakemake)

from metsprep.scan import write_file_list

write_file_list(Path(snakemake.params.input_dir), Path(snakemake.output[0]))
