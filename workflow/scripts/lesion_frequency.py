"""Stage standard_space (cohort): the lesion-frequency map in MNI space and its figure."""
from pathlib import Path

from _common import start

start(snakemake)

from metsprep.standard_space import lesion_frequency

lesion_frequency(
    Path(snakemake.input.cases),
    output_dir=Path(snakemake.params.output_dir),
    out_nifti=Path(snakemake.output.nifti),
    out_sidecar=Path(snakemake.output.sidecar),
    out_png=Path(snakemake.output.figure),
)
