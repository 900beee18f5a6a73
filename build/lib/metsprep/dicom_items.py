"""Raw items of a DICOM sequence, without building a pydicom Dataset per item.

Shared by the scan stage (ROI counts and contour references of every RTSS) and the rtss
stage (contour data): a structure set has thousands of contour items, and a Dataset per
item dominates the cost of reading it.
"""

from __future__ import annotations

import struct
from io import BytesIO
from typing import Any

_ITEM_TAG = 0xFFFEE000


def sequence_items(elem: Any, wanted: list[int]) -> list[dict[int, Any]]:
    """Items of a sequence element as tag -> raw element dicts (only `wanted` tags).

    A defined-length sequence is still raw bytes: its items are split and parsed with
    pydicom's element parser, skipping every value not wanted, which avoids building a
    `Dataset` per item (that dominates the cost of a structure set with many contours).
    Anything else (undefined lengths) goes through pydicom's own sequence reader.
    """
    from pydicom.dataelem import convert_raw_data_element
    from pydicom.filereader import data_element_generator

    if elem is None:
        return []
    if getattr(elem, "is_raw", False) and isinstance(elem.value, bytes):
        item_bytes = _split_items(elem.value, elem.is_little_endian)
        if item_bytes is not None:
            return [
                {int(e.tag): e for e in data_element_generator(
                    BytesIO(item), elem.is_implicit_VR, elem.is_little_endian, specific_tags=wanted
                )}
                for item in item_bytes
            ]
        elem = convert_raw_data_element(elem)
    return [item._dict for item in elem.value or []]


def _split_items(data: bytes, little_endian: bool) -> list[bytes] | None:
    """Values of the items of a sequence, or None unless all have a defined length."""
    item_header = struct.Struct("<HHL" if little_endian else ">HHL")
    items: list[bytes] = []
    pos = 0
    while pos < len(data):
        if pos + 8 > len(data):
            return None
        group, element, length = item_header.unpack_from(data, pos)
        if group << 16 | element != _ITEM_TAG or length == 0xFFFFFFFF or pos + 8 + length > len(data):
            return None
        items.append(data[pos + 8: pos + 8 + length])
        pos += 8 + length
    return items
