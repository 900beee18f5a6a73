# The embedded demo input: a synthetic GammaPlan-style cohort with its ground truth.
# Runs only when config input_dir is empty.


rule synth:
    output:
        dicom=directory(out("demo_cohort/dicom")),
        truth=out("demo_cohort/truth/truth.json"),
    params:
        root=out("demo_cohort"),
        n_cases=config["demo"]["n_cases"],
        seed=config["demo"]["seed"],
        layout=config["demo"]["layout"],
    conda:
        "../../envs/metsprep.yaml"
    log:
        out("logs/synth.log"),
    benchmark:
        out("benchmarks/synth.tsv")
    script:
        "../scripts/synth.py"
