"""config/config.yaml validates against its schema, and the schema rejects bad values."""

import re
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def schema():
    return yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())


@pytest.fixture()
def config():
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def test_default_config_is_valid(schema, config):
    jsonschema.validate(config, schema)


@pytest.mark.parametrize(
    "path, bad_value",
    [
        (("scan", "shards"), 0),
        (("demo", "layout"), "by_folder"),
        (("match", "sequence_overrides"), {"1.2.3": "FLAIR"}),
        (("register", "sampling_percentage"), 1.5),
    ],
)
def test_schema_rejects(schema, config, path, bad_value):
    section, key = path
    config[section][key] = bad_value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, schema)


def test_schema_rejects_unknown_key(schema, config):
    config["scna"] = {"shards": 4}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, schema)


def test_every_config_key_is_in_the_schema(schema, config):
    for section, values in config.items():
        assert section in schema["properties"], section
        if isinstance(values, dict) and "properties" in schema["properties"][section]:
            for key in values:
                assert key in schema["properties"][section]["properties"], f"{section}.{key}"


def _library_text() -> str:
    src = ROOT / "src" / "metsprep"
    return "\n".join(p.read_text() for p in src.rglob("*.py"))


def _workflow_text() -> str:
    return "\n".join(p.read_text() for p in [ROOT / "Snakefile", *(ROOT / "workflow" / "rules").glob("*.smk")])


def test_every_schema_key_is_read_by_some_stage(schema):
    """A key is read when its section's settings class has it as a field that the library
    uses, or when the workflow reads it (config["section"]["key"]) for its own wiring."""
    from dataclasses import fields

    from metsprep.settings import SNAKEMAKE_ONLY_KEYS, STAGE_SETTINGS

    library, workflow = _library_text(), _workflow_text()
    unread = []
    for section, spec in schema["properties"].items():
        keys = spec.get("properties")
        if keys is None:  # a top-level value (input_dir, output_dir)
            if f'config["{section}"]' not in workflow and f'config.get("{section}")' not in workflow:
                unread.append(section)
            continue
        settings = STAGE_SETTINGS.get(section)
        field_names = {f.name for f in fields(settings)} if settings else set()
        for key in keys:
            if key in field_names:
                if not re.search(rf"\.{key}\b", library):
                    unread.append(f"{section}.{key} (a settings field no module reads)")
            elif key in SNAKEMAKE_ONLY_KEYS.get(section, ()) or not settings:
                if f'config["{section}"]["{key}"]' not in workflow:
                    unread.append(f"{section}.{key}")
            else:
                unread.append(f"{section}.{key} (not a field of {settings.__name__})")
        if settings:
            # match.max_missing_run is bids.max_missing_run, passed in by the workflow
            extra = field_names - set(keys) - ({"max_missing_run"} if section == "match" else set())
            assert not extra, f"{settings.__name__} fields {extra} are not in the schema"
    assert not unread, unread


def test_settings_reject_unknown_keys():
    from metsprep.settings import STAGE_SETTINGS

    for cls in STAGE_SETTINGS.values():
        with pytest.raises(ValueError, match="unknown"):
            cls.from_config({"no_such_key": 1})


def test_default_config_builds_every_stage_settings(config):
    from metsprep.settings import STAGE_SETTINGS

    for section, cls in STAGE_SETTINGS.items():
        settings = cls.from_config(config[section])
        assert settings == cls.from_config(settings.to_config())


def test_workflow_lists_agree_with_the_library():
    """The workflow names the files of two rules without importing the library: the lists must agree."""
    import ast

    from metsprep.dataset_card import CATALOG_TABLES
    from metsprep.qc_pages import ASSETS, NIIVUE_ASSET

    common = (Path(__file__).resolve().parents[1] / "workflow" / "rules" / "common.smk").read_text()
    values = {m.group(1): ast.literal_eval(m.group(2))
              for m in re.finditer(r"^(CATALOG_TABLES|QC_ASSETS) = (\([^)]*\))", common, re.M)}
    assert values["CATALOG_TABLES"] == CATALOG_TABLES
    assert values["QC_ASSETS"] == (*ASSETS, NIIVUE_ASSET)
