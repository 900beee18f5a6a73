"""The exports of a pipeline run, read by the tools they are for: nnU-Net v2's own dataset
integrity check and reader, MONAI's datalist loader and image transforms.

Marked `ml`: torch, nnunetv2 and monai are the `ml` extra (~2 min and 1.9 GB to install,
too heavy for `make test`); `make test-heavy` installs them and runs these tests, CI runs both.
The cohort has a patient with two sessions, a case without T2 (left out by the default rule)
and enough cases for two folds and a test set.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.ml, pytest.mark.slow]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    pytest.importorskip("nnunetv2", reason="the ml extra is not installed: make test-heavy")
    pytest.importorskip("monai", reason="the ml extra is not installed: make test-heavy")
    from metsprep.synth import generate_cohort

    root = tmp_path_factory.mktemp("ml")
    generate_cohort(root / "cohort", 4, 23, layout="per_case",
                    case_options={0: {"studies": 2}, 3: {"omit_series": ["T2"]}})
    output = root / "out"
    config = root / "config.yaml"
    config.write_text(f"input_dir: '{root / 'cohort' / 'dicom'}'\noutput_dir: '{output}'\nscan:\n  shards: 1\n"
                      "splits:\n  n_folds: 2\n  test_fraction: 0.25\n")
    done = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", str(config)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-5000:]
    return output


def dataset_dir(output: Path) -> Path:
    return output / "exports" / "nnunet" / "Dataset501_BrainMets"


def test_nnunet_integrity_check_passes_without_a_warning(run, monkeypatch):
    monkeypatch.setenv("nnUNet_raw", str(run / "exports" / "nnunet"))
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        verify_dataset_integrity(str(dataset_dir(run)), num_processes=2)
    text = printed.getvalue()
    assert "verify_dataset_integrity Done" in text
    assert "Error" not in text and "Warning" not in text and "mismatch" not in text, text

    exports = pd.read_parquet(run / "catalog" / "exports.parquet")
    meta = json.loads((dataset_dir(run) / "dataset.json").read_text())
    assert meta["numTraining"] == int((exports["exported"] & (exports["split"] == "train")).sum()) >= 2
    no_t2 = exports[~exports["exported"]]
    assert len(no_t2) == 1 and "no T2" in no_t2["export_reason"].iloc[0]


def test_nnunet_reader_stacks_three_channels_on_the_label_grid(run):
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    exports = pd.read_parquet(run / "catalog" / "exports.parquet")
    row = exports[exports["exported"]].iloc[0]
    images, props = SimpleITKIO().read_images([str(run / p) for p in row["nnunet_images"]])
    seg, seg_props = SimpleITKIO().read_seg(str(run / row["nnunet_label"]))
    assert images.shape[0] == 3 and images.shape[1:] == seg.shape[1:]
    assert np.allclose(props["spacing"], seg_props["spacing"])
    assert set(np.unique(seg)) == {0.0, 1.0}
    # channel 0 is the T1C of the case, voxel for voxel
    cases = pd.read_parquet(run / "catalog" / "cases.parquet").set_index("case_id")
    t1c = nib.load(run / cases.loc[row["case_id"], "t1c_nifti"])
    assert np.allclose(np.asarray(t1c.dataobj, dtype=np.float64).transpose(2, 1, 0), images[0])


def test_splits_final_holds_patients_whole_and_matches_the_splits_table(run):
    splits = pd.read_parquet(run / "catalog" / "splits.parquet")
    folds = json.loads((dataset_dir(run) / "splits_final.json").read_text())
    assert len(folds) == 2
    subject = splits.set_index("case_id")["subject"]
    for k, fold in enumerate(folds):
        assert not set(fold["train"]) & set(fold["val"])
        assert not {subject[c] for c in fold["train"]} & {subject[c] for c in fold["val"]}
        assert set(fold["val"]) <= set(splits.loc[splits["fold"] == k, "case_id"])
    sessions = splits.groupby("subject")["set_name"].nunique()
    assert (sessions == 1).all() and splits.groupby("subject").size().max() == 2


def test_monai_loads_every_datalist_and_its_images(run):
    from monai.data import load_decathlon_datalist
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    splits = pd.read_parquet(run / "catalog" / "splits.parquet").set_index("case_id")
    load = Compose([LoadImaged(keys=["image", "label"], image_only=True),
                    EnsureChannelFirstd(keys=["image", "label"])])
    for k in range(2):
        path = run / "exports" / "monai" / f"fold{k}.json"
        for key, in_fold in (("training", False), ("validation", True)):
            items = load_decathlon_datalist(str(path), True, key)
            assert items, (path, key)
            assert all(splits.loc[i["case_id"], "split"] == "train" and (splits.loc[i["case_id"], "fold"] == k) == in_fold
                       for i in items)
        test_items = load_decathlon_datalist(str(path), True, "test")
        assert test_items and all(splits.loc[i["case_id"], "split"] == "test" for i in test_items)
    sample = load(load_decathlon_datalist(str(run / "exports" / "monai" / "fold0.json"), True, "training")[0])
    assert sample["image"].shape[0] == 3 and sample["label"].shape[0] == 1
    assert sample["image"].shape[1:] == sample["label"].shape[1:]
    assert float(sample["label"].max()) == 1.0
