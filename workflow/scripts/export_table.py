"""Stage export (cohort): catalog/exports.parquet, what became of each case."""
from pathlib import Path

from _common import start

start(snakemake)

from metsprep.export import write_export_table

write_export_table(
    result_jsons=[Path(p) for p in snakemake.input.results],
    splits_parquet=Path(snakemake.input.splits),
    cases_parquet=Path(snakemake.input.cases),
    nnunet_dataset_dir=snakemake.params.nnunet_dataset_dir or None,
    out_table=Path(snakemake.output.table),
)
