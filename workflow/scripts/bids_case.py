"""Stage bids: one case's T1C/T1/T2 DICOM series to BIDS NIfTI + sidecars."""
from pathlib import Path

from _common import start

start(snakemake)

from metsprep.bids import convert_case
from metsprep.settings import BidsSettings

convert_case(
    Path(snakemake.input.plan),
    output_dir=Path(snakemake.params.output_dir),
    result_json=Path(snakemake.output.result),
    settings=BidsSettings.from_config(snakemake.params.settings),
)
