"""Patient-level splits: the ledger (first split, kept) or catalog/splits.parquet around it."""
from pathlib import Path

from _common import optional_input, start

start(snakemake)

import logging

from metsprep.settings import SplitSettings
from metsprep.splits import balance_report, write_splits

settings = SplitSettings.from_config(snakemake.params.settings)
out = Path(snakemake.output[0])
assignments = write_splits(
    cases_parquet=Path(snakemake.input.cases),
    series_parquet=Path(snakemake.input.series),
    settings=settings,
    out=out,
    frozen_parquet=optional_input(snakemake, "frozen"),
)
logging.info("%s: %d cases\n%s", out.name, len(assignments), balance_report(assignments, settings))
