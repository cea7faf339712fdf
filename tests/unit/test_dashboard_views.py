"""What the dashboard's JSON says of a payload: JSON when it can, else its repr, cut to a bound."""

from __future__ import annotations

from datetime import datetime, timezone

from vermilion.dashboard._views import PAYLOAD_CHARS, payload_text


def test_a_payload_is_shown_as_json_with_sorted_keys_and_its_own_characters() -> None:
    assert payload_text({"b": 1, "a": ["é", None]}) == ('{"a": ["é", null], "b": 1}', False)


def test_what_json_cannot_hold_is_shown_as_its_repr() -> None:
    assert payload_text(b"\xff\x00raw") == (repr(b"\xff\x00raw"), False)
    moment = datetime(2026, 12, 7, tzinfo=timezone.utc)
    assert payload_text({"at": moment}) == (repr({"at": moment}), False)
    assert payload_text(float("nan")) == ("NaN", False)  # what json.dumps writes, not refused


def test_a_long_payload_is_cut_and_says_so() -> None:
    text, cut = payload_text("x" * (PAYLOAD_CHARS * 2))
    assert cut and len(text) == PAYLOAD_CHARS and text.startswith('"xxx')
    text, cut = payload_text("x" * (PAYLOAD_CHARS - 2))
    assert not cut and len(text) == PAYLOAD_CHARS
