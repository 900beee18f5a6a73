"""Stage scan: merge the shards into catalog/inventory.parquet."""
import sys
from pathlib import Path

# Use the library of this checkout even where metsprep is not installed (e.g. --sdm conda).
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from metsprep.logs import start_log  # noqa: E402

start_log(snakemake.log[0])

from metsprep.scan import merge_shards  # noqa: E402

merge_shards([Path(p) for p in snakemake.input], Path(snakemake.output[0]))
