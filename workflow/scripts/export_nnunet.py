"""Stage export (cohort): the nnU-Net v2 raw dataset."""
from pathlib import Path

from _common import start

start(snakemake)

from metsprep.export import export_nnunet
from metsprep.settings import ExportSettings, SplitSettings

splits = SplitSettings.from_config(snakemake.params.splits)
export_nnunet(
    result_jsons=[Path(p) for p in snakemake.input.results],
    splits_parquet=Path(snakemake.input.splits),
    cases_parquet=Path(snakemake.input.cases),
    settings=ExportSettings.from_config(snakemake.params.settings),
    n_folds=splits.n_folds,
    split_seed=splits.seed,
    output_dir=Path(snakemake.params.output_dir),
    out_dataset_dir=Path(snakemake.output.dataset),
)
