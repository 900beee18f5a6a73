"""Stage export (cohort): one MONAI datalist per fold."""
from pathlib import Path

from _common import start

start(snakemake)

from metsprep.export import export_monai
from metsprep.settings import SplitSettings

export_monai(
    result_jsons=[Path(p) for p in snakemake.input.results],
    splits_parquet=Path(snakemake.input.splits),
    cases_parquet=Path(snakemake.input.cases),
    n_folds=SplitSettings.from_config(snakemake.params.splits).n_folds,
    output_dir=Path(snakemake.params.output_dir),
    out_jsons=[Path(p) for p in snakemake.output.datalists],
)
