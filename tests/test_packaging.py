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
