"""The conda environment and pyproject.toml pin the same direct dependencies."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _split_requirement(requirement: str) -> tuple[str, str]:
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement)
    assert match, requirement
    return _normalise(match.group(1)), match.group(2).replace(" ", "")


def test_conda_env_pins_match_pyproject():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = dict(_split_requirement(r) for r in pyproject["project"]["dependencies"])

    env = yaml.safe_load((ROOT / "envs" / "metsprep.yaml").read_text())
    found: dict[str, str] = {}
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            for pip_requirement in entry.get("pip", []):
                name, spec = _split_requirement(pip_requirement)
                found[name] = spec
        else:
            name, spec = _split_requirement(entry)
            if name not in {"python", "pip"}:
                found[name] = spec

    assert found == wanted


def test_python_pin_matches():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    env = yaml.safe_load((ROOT / "envs" / "metsprep.yaml").read_text())
    python = next(e for e in env["dependencies"] if isinstance(e, str) and e.startswith("python "))
    assert python.split(" ", 1)[1].replace(" ", "") == pyproject["project"]["requires-python"]


def test_wheel_carries_the_package_data(tmp_path):
    """A non-editable install reads the rule table and the vocabulary from the wheel."""
    import shutil
    import subprocess
    import sys
    import zipfile

    # build from a copy: setuptools writes build/ and *.egg-info beside the sources
    source = tmp_path / "source"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path), str(source)], check=True, capture_output=True)  # fmt: skip
    (wheel,) = tmp_path.glob("metsprep-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"metsprep/data/sequence_rules.yaml", "metsprep/data/sequence_lexicon.yaml",
            "metsprep/data/location_vocabulary.yaml", "metsprep/py.typed"} <= names
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    code = ("from metsprep.classify import load_rules; from metsprep.location import read_vocabulary; "
            "import metsprep; assert 'site' in metsprep.__file__; "
            "print(len(load_rules().description_rules), len(read_vocabulary().regions))")
    result = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(target), "PATH": ""},
                            capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    rules, regions = map(int, result.stdout.split())
    assert rules > 10 and regions > 5
