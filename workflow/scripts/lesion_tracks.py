"""Stage longitudinal (cohort): catalog/lesion_tracks.parquet and its QC figure."""
from pathlib import Path

from _common import start

start(snakemake)

from metsprep.longitudinal import lesion_tracks
from metsprep.qc import lesion_tracks_figure
from metsprep.settings import LongitudinalSettings

lesion_tracks(
    Path(snakemake.input.cases),
    lesions_parquet=Path(snakemake.input.lesions),
    session_jsons=[Path(p) for p in snakemake.input.sessions],
    out_parquet=Path(snakemake.output.tracks),
    settings=LongitudinalSettings.from_config(snakemake.params.settings),
)
lesion_tracks_figure(Path(snakemake.output.tracks), Path(snakemake.output.figure))
