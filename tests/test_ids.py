"""Deterministic ids are forever: the fast computations equal their reference definitions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.contracts import Identifier
from hub.fhir.ids import HUB_NAMESPACE, instant_key, observation_id, stable_id, utc_isoformat


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


@settings(max_examples=2000)
@given(st.datetimes(timezones=st.sampled_from(
    [UTC, timezone(timedelta(0)), timezone(timedelta(hours=2)),
     timezone(timedelta(hours=-9, minutes=-30))])))
def test_utc_isoformat_is_isoformat(when: datetime) -> None:
    assert utc_isoformat(when) == when.isoformat()


def test_utc_isoformat_edges() -> None:
    for when in (datetime(2026, 1, 1, tzinfo=UTC), datetime(999, 12, 31, 23, 59, 59, 1, UTC),
                 datetime(1000, 1, 1, 0, 0, 0, 999999, UTC), datetime(9999, 12, 31, tzinfo=UTC),
                 datetime(2026, 1, 1, 0, 0, 0, 10, UTC), datetime(2026, 1, 1)):
        assert utc_isoformat(when) == when.isoformat()


@settings(max_examples=1000)
@given(st.text(), st.text(), st.none() | st.text(), st.text(),
       st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=2))])))
def test_observation_id_is_its_stable_id(system: str, value: str, patient: str | None,
                                         mtype: str, when: datetime) -> None:
    """The per-prefix SHA-1 states give the id stable_id gives over the joined key."""
    device = Identifier(system, value)
    try:
        expected = stable_id("Observation", device.token(), patient or "", mtype,
                             instant_key(when))
    except UnicodeEncodeError:  # lone surrogates: neither can encode them
        return
    assert observation_id(device, patient, mtype, when) == expected
    assert observation_id(device, patient, mtype, when, when.isoformat()) == expected
    assert observation_id(device, patient, mtype, when) == expected  # from the cached state
