"""Stage catalog (merge): catalog/{series,cases,lesions}.parquet and the data dictionary."""
from pathlib import Path

from _common import optional_input, start

start(snakemake)

from metsprep.catalog.merge import build_catalog

build_catalog(
    inventory_parquet=Path(snakemake.input.inventory),
    match_series_parquet=Path(snakemake.input.series),
    match_cases_parquet=Path(snakemake.input.cases),
    case_jsons=[Path(p) for p in snakemake.input.case_results],
    lesion_parquets=[Path(p) for p in snakemake.input.lesions],
    out_series=Path(snakemake.output.series),
    out_cases=Path(snakemake.output.cases),
    out_lesions=Path(snakemake.output.lesions),
    out_dictionary=Path(snakemake.output.dictionary),
    config=dict(snakemake.params.config),
    ratings_tsv=optional_input(snakemake, "ratings"),
)
