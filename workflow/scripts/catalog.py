"""Stage catalog: merge everything into catalog/{series,cases,lesions}.parquet."""
import sys
from pathlib import Path

# Use the library of this checkout even where metsprep is not installed (e.g. --sdm conda).
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from metsprep.logs import start_log  # noqa: E402

start_log(snakemake.log[0])

from metsprep.catalog import build_catalog  # noqa: E402

build_catalog(
    inventory_parquet=Path(snakemake.input.inventory),
    match_series_parquet=Path(snakemake.input.series),
    match_cases_parquet=Path(snakemake.input.cases),
    case_jsons=[Path(p) for p in snakemake.input.case_results],
    lesion_parquets=[Path(p) for p in snakemake.input.lesions],
    output_dir=Path(snakemake.params.output_dir),
    out_series=Path(snakemake.output.series),
    out_cases=Path(snakemake.output.cases),
    out_lesions=Path(snakemake.output.lesions),
    out_dictionary=Path(snakemake.output.dictionary),
    config=dict(snakemake.params.config),
)
