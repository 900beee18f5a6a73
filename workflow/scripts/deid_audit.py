"""Stage deid (merge): the shards into catalog/deid_audit.parquet."""
from pathlib import Path

from _common import start

start(snakemake)

from metsprep.deid import merge_audit

merge_audit([Path(p) for p in snakemake.input], Path(snakemake.output[0]))
