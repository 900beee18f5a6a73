"""Stage scan (merge): the shards into catalog/inventory.parquet."""
from pathlib import Path

from _common import start

start(snakemake)

from metsprep.scan import merge_shards

merge_shards([Path(p) for p in snakemake.input], Path(snakemake.output[0]))
