"""Patient-level splits: the ledger (first split, kept) or catalog/splits.parquet around it."""
from pathlib import Path

from _common import start

start(snakemake)

import logging

from metsprep.settings import SplitSettings
from metsprep.splits import balance_report, write_splits

settings = SplitSettings.from_config(snakemake.params.settings)
frozen = snakemake.input.get("frozen") or []
frozen = [Path(frozen)] if isinstance(frozen, str) else [Path(p) for p in frozen]
out = Path(snakemake.output[0])
assignments = write_splits(
    cases_parquet=Path(snakemake.input.cases),
    series_parquet=Path(snakemake.input.series),
    settings=settings,
    out=out,
    frozen_parquet=frozen[0] if frozen else None,
)
logging.info("%s: %d cases\n%s", out.name, len(assignments), balance_report(assignments, settings))
