"""Stage longitudinal (per later session): its T1W+C onto the patient's first ok session."""
from pathlib import Path

from _common import start

start(snakemake)

from metsprep.longitudinal import register_session
from metsprep.settings import LongitudinalSettings, RegistrationSettings

register_session(
    Path(snakemake.input.bids),
    earlier_bids_jsons=[Path(p) for p in snakemake.input.earlier],
    output_dir=Path(snakemake.params.output_dir),
    result_json=Path(snakemake.output.result),
    register=RegistrationSettings.from_config(snakemake.params.register),
    settings=LongitudinalSettings.from_config(snakemake.params.settings),
)
