"""Heart-failure weight gain against the patient's recent weight: a skipped or noisy weighing
yesterday neither hides nor fakes a gain."""

from __future__ import annotations

from typing import Any

from .conftest import at, of, summary_of


def weights(*values: float | None) -> list[dict[str, Any]]:
    """One morning weight a day (None: not weighed that day)."""
    return [{"type": "body-weight", "time": at(days=day), "value": value, "unit": "kg"}
            for day, value in enumerate(values) if value is not None]


def flags(session, values: list[float | None], **override: Any) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    run = session("hf-weight-gain")
    if override:
        run.override("hf-weight-gain", override)
    run.post(weights(*values))
    return of(run.outputs(), "Flag")


def test_a_skipped_weighing_yesterday_does_not_hide_a_gain(session) -> None:  # type: ignore[no-untyped-def]
    (flag,) = flags(session, [80.0, 80.2, None, 81.7])
    assert "up 1.6 kg on the recent weight 80.1 kg (median of 80 kg on 2026-11-20, 80.2 kg " \
           "on 2026-11-21; limit 1.4 kg in a day)" in summary_of(flag)
    assert flags(session, [80.0, 80.2, None, 81.7], day_reference=1) == []  # yesterday only


def test_one_low_weighing_yesterday_does_not_fake_a_gain(session) -> None:  # type: ignore[no-untyped-def]
    assert flags(session, [80.0, 80.1, 79.5, 80.9]) == []  # 0.9 over the median of 80.0
    (flag,) = flags(session, [80.0, 80.1, 79.5, 80.9], day_reference=1)  # 1.4 over 79.5
    assert "up 1.4 kg on the previous weight 79.5 kg" in summary_of(flag)


def test_a_gain_the_first_mornings_noise_hid_is_found_the_next_morning(session) -> None:  # type: ignore[no-untyped-def]
    (flag,) = flags(session, [80.0, 80.1, 80.0, 81.3, 81.6])  # a 1.6 kg step read as 1.3
    assert flag["period"]["start"] == at(days=4).replace("+00:00", "Z")
    assert "up 1.5 kg on the recent weight 80.1 kg" in summary_of(flag)
    assert flags(session, [80.0, 80.1, 80.0, 81.3, 81.6], day_reference=1) == []


def test_a_gain_exactly_at_the_limit_meets_it(session) -> None:  # type: ignore[no-untyped-def]
    # 79.0 - 76.7 is 2.2999999999999972 in binary floating point: still 2.3 kg on the scale
    (flag,) = flags(session, [76.7, 77.0, 77.2, 77.7, 78.4, 78.8, 79.0])
    assert "up 2.3 kg on the week's lowest (76.7 kg on 2026-11-20" in summary_of(flag)
