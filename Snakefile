# metsprep: a brain-metastasis MRI + GammaPlan RT Structure Set collection to BIDS,
# lesion masks and a Parquet catalog. Stages, files and conventions: docs/design.md.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "config/schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/synth.smk"
include: "workflow/rules/scan.smk"
include: "workflow/rules/deid.smk"
include: "workflow/rules/match.smk"
include: "workflow/rules/bids.smk"
include: "workflow/rules/rtss.smk"
include: "workflow/rules/register.smk"
include: "workflow/rules/standard_space.smk"
include: "workflow/rules/longitudinal.smk"
include: "workflow/rules/catalog.smk"
include: "workflow/rules/qc.smk"
include: "workflow/rules/export.smk"


# Quick aggregation steps run on the submitting host under a cluster executor.
localrules:
    all,
    scan,
    bids_dataset,
    catalog,
    qc_report,
    split_ledger,
    splits,
    export_nnunet,
    export_monai,
    export_table,
    dataset_card,


rule all:
    default_target: True
    input:
        get_final_outputs(),
