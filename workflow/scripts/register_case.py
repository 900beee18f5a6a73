"""Stage register: one case's T1 and T2 rigidly onto the T1W+C grid."""
from pathlib import Path

from _common import start

start(snakemake)

from metsprep.register import register_case
from metsprep.settings import RegistrationSettings

register_case(
    Path(snakemake.input.bids),
    output_dir=Path(snakemake.params.output_dir),
    result_json=Path(snakemake.output.result),
    settings=RegistrationSettings.from_config(snakemake.params.settings),
)
