"""Package data: the shipped sequence rule table and ROI-name vocabulary."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SEQUENCE_RULES = "sequence_rules.yaml"
SEQUENCE_LEXICON = "sequence_lexicon.yaml"
LOCATION_VOCABULARY = "location_vocabulary.yaml"


def read_text(name: str, override: str | Path | None = None) -> str:
    """The packaged file ``name``, or the file ``override`` where one is given (config)."""
    if override:
        return Path(override).read_text(encoding="utf-8")
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
