# Config lookups and input functions shared by the stage rule files.
from pathlib import Path

OUTPUT_DIR = Path(config["output_dir"])
RUN_DEMO = not config.get("input_dir")
INPUT_DIR = (
    (OUTPUT_DIR / "demo_cohort" / "dicom") if RUN_DEMO else Path(config["input_dir"])
)
# The demo cohort is a handful of cases: more scan jobs than cases would only add start-ups.
N_SCAN_SHARDS = (
    min(config["scan"]["shards"], config["demo"]["n_cases"])
    if RUN_DEMO
    else config["scan"]["shards"]
)

# What the QC pages load from qc/assets/ (metsprep.qc_pages: ASSETS + NIIVUE_ASSET).
QC_ASSETS = ("review.js", "review.css", "niivue.umd.js")
# Catalog tables the dataset card and Croissant metadata describe (metsprep.dataset_card).
CATALOG_TABLES = (
    "inventory",
    "series",
    "cases",
    "lesions",
    "splits",
    "exports",
    "deid_audit",
    "lesion_tracks",
)
# Model-training exports (paths below the output folder).
NNUNET_DATASET_DIR = "exports/nnunet/Dataset{:03d}_{}".format(
    config["export"]["dataset_id"], config["export"]["dataset_name"]
)
# The cohort's lesion-frequency map in MNI space (metsprep.standard_space).
LESION_FREQUENCY_MAP = (
    "standard_space/space-MNI152NLin2009aSym_res-2_desc-lesionfrequency.nii.gz"
)
MONAI_DATALISTS = [
    str(OUTPUT_DIR / f"exports/monai/fold{k}.json")
    for k in range(config["splits"]["n_folds"])
]


wildcard_constraints:
    case_id=r"sub-[A-Za-z0-9]+_ses-[A-Za-z0-9]+",
    shard=r"\d+",


def config_file(path):
    """A file named in the config: relative paths are relative to the workflow's folder."""
    path = Path(path)
    return str(path if path.is_absolute() else Path(workflow.basedir) / path)


def package_data_or(path, name):
    """A config file (rule input) or, where the key is empty, the package's shipped copy."""
    return (
        config_file(path)
        if path
        else str(Path(workflow.basedir) / "src" / "metsprep" / "data" / name)
    )


def setting_with_path(section, key):
    """A config section with its file key resolved as a rule input resolves it."""
    return {**section, key: config_file(section[key]) if section[key] else ""}


def output_folder(wildcards):
    """The output folder, as a rule parameter (stages name their files relative to it)."""
    return str(OUTPUT_DIR)


def out(path):
    """A path below the output folder."""
    return str(OUTPUT_DIR / path)


def case_work(name):
    """A per-case file below work/cases/{case_id}/."""
    return out(f"work/cases/{{case_id}}/{name}")


def get_input_dir_marker(wildcards=None):
    """The demo cohort is produced by a rule; real input is taken as it is."""
    return [out("demo_cohort/truth/truth.json")] if RUN_DEMO else []


_CASE_IDS = {}


def get_case_ids(wildcards=None):
    """Cases that go on after matching: one plan file each (the match checkpoint). Listed
    once per state of the plans folder: input functions of 1,000 cases ask for it often.
    """
    plans_dir = Path(checkpoints.match.get().output.plans)
    key = (str(plans_dir), plans_dir.stat().st_mtime_ns)
    if key not in _CASE_IDS:
        _CASE_IDS.clear()
        _CASE_IDS[key] = sorted(p.stem for p in plans_dir.glob("*.json"))
    return _CASE_IDS[key]


def for_each_case(pattern):
    """Input function: `pattern` (below the output folder, with {case_id}) for every case."""

    def inputs(wildcards):
        return [out(pattern.format(case_id=case_id)) for case_id in get_case_ids()]

    return inputs


def per_case(name):
    """Input function: one per-case work file for every case."""
    return for_each_case(f"work/cases/{{case_id}}/{name}")


def subject_of(case_id):
    """The subject part of a case id (`sub-X_ses-Y` -> `sub-X`)."""
    return case_id.split("_ses-")[0]


_SESSIONS = {}


def sessions_by_subject():
    """Case ids grouped by subject, computed once per listing of the plans."""
    case_ids = get_case_ids()
    if _SESSIONS.get("of") is not case_ids:
        grouped = {}
        for case_id in case_ids:
            grouped.setdefault(subject_of(case_id), []).append(case_id)
        _SESSIONS.update(of=case_ids, grouped=grouped)
    return _SESSIONS["grouped"]


def earlier_sessions(case_id):
    """The cases of the same subject with an earlier session label (date order)."""
    return [
        c for c in sessions_by_subject().get(subject_of(case_id), []) if c < case_id
    ]


def get_earlier_session_bids(wildcards):
    return [
        out(f"work/cases/{c}/bids.json") for c in earlier_sessions(wildcards.case_id)
    ]


def get_session_registrations(wildcards=None):
    """One session registration for every case that is not its subject's first session."""
    return [
        out(f"work/cases/{c}/session_registration.json")
        for c in get_case_ids()
        if earlier_sessions(c)
    ]


def ratings_file():
    """The reviewers' decisions (config qc.ratings; relative paths below the output folder)."""
    path = Path(config["qc"]["ratings"])
    return path if path.is_absolute() else OUTPUT_DIR / path


def get_ratings(wildcards=None):
    """The ratings file as an input where it exists: written by the QC pages, not by a rule."""
    return [str(ratings_file())] if ratings_file().exists() else []


def get_frozen_split(wildcards=None):
    """An earlier split whose patients keep their sets (config splits.frozen), if named."""
    frozen = config["splits"]["frozen"]
    return [config_file(frozen)] if frozen else []


def get_export_outputs():
    outputs = [
        out("catalog/splits.parquet"),
        out("catalog/exports.parquet"),
        out("DATASET_CARD.md"),
        out("croissant.json"),
    ]
    if config["export"]["nnunet"]:
        outputs.append(out(NNUNET_DATASET_DIR))
    if config["export"]["monai"]:
        outputs += MONAI_DATALISTS
    return outputs


def get_final_outputs():
    return get_export_outputs() + [
        out("catalog/inventory.parquet"),
        out("catalog/deid_audit.parquet"),
        out("catalog/series.parquet"),
        out("catalog/cases.parquet"),
        out("catalog/lesions.parquet"),
        out("catalog/README.md"),
        out("bids/dataset_description.json"),
        out("qc/index.html"),
        out(LESION_FREQUENCY_MAP),
        out("catalog/lesion_tracks.parquet"),
    ]
