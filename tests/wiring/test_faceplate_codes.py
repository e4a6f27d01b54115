"""The faceplate's code tables in deploy/DCS_INTEGRATION.md are the ones in boiler_ai/status_codes.py."""

from __future__ import annotations

from pathlib import Path

from boiler_ai import status_codes

ROOT = Path(__file__).resolve().parents[2]


def test_the_dcs_guide_prints_the_code_table_of_the_code():
    text = (ROOT / "deploy" / "DCS_INTEGRATION.md").read_text()
    start, end = "<!-- codes: python -m boiler_ai.status_codes -->\n", "\n<!-- end of codes -->"
    assert start in text and end in text, "deploy/DCS_INTEGRATION.md lost its code-table markers"
    shown = text[text.index(start) + len(start):text.index(end)]
    assert shown == status_codes.markdown(), "regenerate the table: python -m boiler_ai.status_codes"


def test_every_code_is_unique_and_none_is_zero():
    assert status_codes.NONE.code == 0 and status_codes.BY_CODE[0] is status_codes.NONE
    assert sorted(status_codes.MODE_CODES.values()) == list(range(len(status_codes.MODE_CODES)))
    assert all(0 <= r.code <= 999 for r in status_codes.REASONS)
