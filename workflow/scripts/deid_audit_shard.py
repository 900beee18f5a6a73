"""Stage deid (one shard): the de-identification audit of one scan shard's files."""
from pathlib import Path

from _common import start

start(snakemake)

from metsprep.deid import audit_shard
from metsprep.settings import DeidSettings

audit_shard(
    Path(snakemake.params.input_dir),
    Path(snakemake.input[0]),
    DeidSettings.from_config(snakemake.params.settings),
    Path(snakemake.output[0]),
)
