"""Stage export (per case): the case's files for model training, or why it is left out."""
from pathlib import Path

from _common import start

start(snakemake)

from metsprep.contracts import CaseSummary
from metsprep.export import export_case
from metsprep.settings import ExportSettings

export_case(
    summary=CaseSummary.read(snakemake.input.case),
    settings=ExportSettings.from_config(snakemake.params.settings),
    output_dir=Path(snakemake.params.output_dir),
    out_result=Path(snakemake.output.result),
)
