# The embedded demo input: a synthetic GammaPlan-style cohort with its ground truth.
# Runs only when config input_dir is empty.


rule synth:
    output:
        dicom=directory(out("demo_cohort/dicom")),
        truth=out("demo_cohort/truth/truth.json"),
    log:
        out("logs/synth.log"),
    benchmark:
        out("benchmarks/synth.tsv")
    conda:
        "../../envs/metsprep.yaml"
    params:
        root=lambda wildcards, output: str(Path(output.truth).parents[1]),
        n_cases=config["demo"]["n_cases"],
        seed=config["demo"]["seed"],
        layout=config["demo"]["layout"],
    script:
        "../scripts/synth.py"
