"""DATASET_CARD.md and croissant.json at the top of the output folder, from the catalog."""
from pathlib import Path

from _common import start

start(snakemake)

from metsprep import __version__
from metsprep.dataset_card import CATALOG_TABLES, write_dataset_card

write_dataset_card(
    table_paths={table: Path(snakemake.input[table]) for table in CATALOG_TABLES},
    output_dir=Path(snakemake.params.output_dir),
    title=snakemake.params.title,
    version=__version__,
    out_card=Path(snakemake.output.card),
    out_croissant=Path(snakemake.output.croissant),
)
