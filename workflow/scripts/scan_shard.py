"""Stage scan: read the headers of one shard of the input files."""
import sys
from pathlib import Path

# Use the library of this checkout even where metsprep is not installed (e.g. --sdm conda).
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from metsprep.logs import start_log  # noqa: E402

start_log(snakemake.log[0])

from metsprep.scan import scan_shard  # noqa: E402

scan_shard(
    Path(snakemake.params.input_dir),
    shard=int(snakemake.wildcards.shard),
    n_shards=snakemake.params.n_shards,
    out_parquet=Path(snakemake.output[0]),
)
