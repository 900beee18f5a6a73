"""Stage scan (one shard): header-only inventory of a stable share of the input files."""
from pathlib import Path

from _common import start

start(snakemake)

from metsprep.scan import scan_shard

scan_shard(
    Path(snakemake.params.input_dir),
    shard=int(snakemake.wildcards.shard),
    n_shards=snakemake.params.n_shards,
    out_parquet=Path(snakemake.output[0]),
    file_list=Path(snakemake.input[0]),
)
