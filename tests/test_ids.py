"""Deterministic ids are forever: the fast computations equal their reference definitions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.fhir.ids import HUB_NAMESPACE, instant_key, stable_id


@settings(max_examples=2000)
@given(st.lists(st.text(), min_size=1, max_size=5))
def test_stable_id_is_uuid5(parts: list[str]) -> None:
    try:
        expected = str(uuid.uuid5(HUB_NAMESPACE, "|".join(parts)))
    except UnicodeEncodeError:  # lone surrogates: neither can encode them
        return
    assert stable_id(*parts) == expected


def test_stable_id_known_value() -> None:
    # pinned: changing it would re-key every stored resource
    assert stable_id("Observation", "a", "b") == str(
        uuid.uuid5(uuid.UUID("7d1c6a52-5f3e-4c8f-9a4b-1f0b8e6a2c01"), "Observation|a|b"))


@settings(max_examples=2000)
@given(st.datetimes(timezones=st.sampled_from(
    [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-9, minutes=-30))])))
def test_instant_key_is_utc_strftime(when: datetime) -> None:
    try:
        expected = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except OverflowError:  # the instant is outside datetime's range in UTC
        return
    assert instant_key(when) == expected


@settings(max_examples=2000)
@given(st.datetimes(timezones=st.sampled_from(
    [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-9, minutes=-30))])))
def test_instant_key_from_the_isoformat_is_utc_strftime(when: datetime) -> None:
    """build_observation passes the effectiveDateTime it wrote; the key is the same."""
    try:
        expected = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except OverflowError:
        return
    assert instant_key(when, when.isoformat()) == expected
