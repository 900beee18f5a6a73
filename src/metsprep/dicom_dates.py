"""DICOM date values: which ones are real dates (used by matching and the de-identification audit)."""

from __future__ import annotations

import datetime


def valid_dicom_date(text: str) -> bool:
    """A DICOM DA value YYYYMMDD that is a real calendar date (19011345 and 'abc' are not)."""
    try:
        datetime.datetime.strptime(text.strip(), "%Y%m%d")
    except ValueError:
        return False
    return len(text.strip()) == 8
