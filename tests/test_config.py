"""config/config.yaml validates against its schema, and the schema rejects bad values."""

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
