"""ACKs: mirrored MSH, MSA-2 echo, ERR per version, original/enhanced mode decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.hl7v2 import (
    AckCode,
    AckError,
    AckMode,
    ErrorCode,
    Hl7ParseError,
    Outcome,
    ack_mode,
    build_ack,
    build_reject_ack,
    parse_message,
    plan_acks,
)
from hub.hl7v2.ack import _timestamp

from .conftest import CORPUS_HL7V2, corpus_files

NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def msh(version: str = "2.5.1", ack15: str = "", ack16: str = "", ctrl: str = "CTRL-1") -> str:
    return (f"MSH|^~\\&|SendApp|SendFac^1.2.3^ISO|RecvApp|RecvFac|20240102030405||ORU^R01^ORU_R01|"
            f"{ctrl}|P|{version}|||{ack15}|{ack16}")


def test_original_mode_aa_mirrors_the_header() -> None:
    inbound = parse_message(msh() + "\rPID|1\r")
    assert ack_mode(inbound) is AckMode.ORIGINAL
    ack = parse_message(build_ack(inbound, AckCode.AA, control_id="ACK1", now=NOW))
    h = ack.msh
    assert h.raw(2) == "^~\\&"
    assert (h.field(3), h.field(4), h.field(5), h.raw(6)) == (
        "RecvApp", "RecvFac", "SendApp", "SendFac^1.2.3^ISO")
    assert h.field(7) == "20240506070809+0000"
    assert h.raw(9) == "ACK^R01^ACK"
    assert h.field(10) == "ACK1"
    assert (h.field(11), h.field(12)) == ("P", "2.5.1")
    assert (h.field(15), h.field(16)) == ("", "")
    assert ack.get("MSA", 1) == "AA"
    assert ack.get("MSA", 2) == "CTRL-1"
    assert ack.segment("ERR") is None


def test_fresh_control_id_and_local_time_offset() -> None:
    inbound = parse_message(msh())
    a, b = (parse_message(build_ack(inbound, AckCode.AA)) for _ in range(2))
    assert a.control_id != b.control_id != "CTRL-1"
    assert len(a.control_id) == 20
    plus_two = datetime(2024, 5, 6, 9, 8, 9, tzinfo=timezone(timedelta(hours=2)))
    assert parse_message(build_ack(inbound, AckCode.AA, now=plus_two)).get("MSH", 7) == (
        "20240506090809+0200")
    with pytest.raises(ValueError, match="timezone"):
        build_ack(inbound, AckCode.AA, now=datetime(2024, 1, 1))


def test_msa2_echoes_msh10_exactly_as_sent() -> None:
    inbound = parse_message(msh(ctrl="A\\F\\B~2"))
    ack = parse_message(build_ack(inbound, AckCode.AA))
    assert ack.msh.raw(10) != "A\\F\\B~2"
    assert ack.segment("MSA") is not None
    msa = ack.segment("MSA")
    assert msa is not None and msa.raw(2) == "A\\F\\B~2"


@pytest.mark.parametrize(
    ("outcome", "code"),
    [(Outcome.ACCEPTED, AckCode.AA), (Outcome.DATA_ERROR, AckCode.AE),
     (Outcome.REJECTED, AckCode.AR)],
)
def test_original_mode_plan(outcome: Outcome, code: AckCode) -> None:
    plan = plan_acks(parse_message(msh()), outcome)
    assert (plan.mode, plan.accept, plan.application, plan.immediate) == (
        AckMode.ORIGINAL, None, code, code)


def test_ae_carries_err_with_location_v25() -> None:
    inbound = parse_message(msh() + "\rPID|1\rOBR|1\rOBX|1|NM|HR||abc\r")
    err = AckError(ErrorCode.DATA_TYPE_ERROR, "OBX-5 is not a number", "OBX", 4, 5)
    ack = parse_message(build_ack(inbound, AckCode.AE, errors=[err]))
    assert ack.get("MSA", 1) == "AE"
    assert ack.get("MSA", 3) == ""  # v2.5+: the text goes to ERR, not MSA-3
    e = ack.segment("ERR")
    assert e is not None
    assert e.raw(1) == ""
    assert e.raw(2) == "OBX^4^5"
    assert e.raw(3) == "102^Data type error^HL70357"
    assert e.field(4) == "E"
    assert e.field(7) == "OBX-5 is not a number"


def test_err2_location_with_repetition_and_component() -> None:
    inbound = parse_message(msh() + "\rPID|1||A~B\r")
    err = AckError(ErrorCode.DATA_TYPE_ERROR, "bad identifier type", "PID", 2, 3,
                   repetition=2, component=5)
    ack = parse_message(build_ack(inbound, AckCode.AE, errors=[err]))
    assert ack.get("ERR", 2) == "PID"
    e = ack.segment("ERR")
    assert e is not None and e.raw(2) == "PID^2^3^2^5"


def test_err1_for_versions_before_25() -> None:
    inbound = parse_message(msh(version="2.3.1"))
    err = AckError(ErrorCode.REQUIRED_FIELD_MISSING, "PID-3 missing", "PID", 2, 3)
    ack = parse_message(build_ack(inbound, AckCode.AE, errors=[err]))
    e = ack.segment("ERR")
    assert e is not None
    assert e.raw(1) == "PID^2^3^101&Required field missing&HL70357"
    assert e.subcomponent(1, 4, 1) == "101"
    assert ack.get("MSA", 3) == "PID-3 missing"
    assert ack.msh.raw(9) == "ACK^R01^ACK"


@pytest.mark.parametrize(("version", "msh9"), [("2.1", "ACK"), ("2.2", "ACK^R01"),
                                               ("2.3", "ACK^R01"), ("2.4", "ACK^R01^ACK"),
                                               ("2.8", "ACK^R01^ACK")])
def test_msh9_follows_the_version(version: str, msh9: str) -> None:
    ack = parse_message(build_ack(parse_message(msh(version=version)), AckCode.AA))
    assert ack.msh.raw(9) == msh9
    assert ack.version == version


def test_free_text_is_escaped_in_err() -> None:
    inbound = parse_message(msh())
    err = AckError(ErrorCode.APPLICATION_INTERNAL_ERROR, "bad | value ^ here\rPID|x")
    ack = parse_message(build_ack(inbound, AckCode.AR, errors=[err]))
    assert [s.name for s in ack.segments] == ["MSH", "MSA", "ERR"]
    assert ack.get("ERR", 7) == "bad | value ^ here\rPID|x"


def test_ack_uses_the_inbound_delimiters_and_charset() -> None:
    text = "MSH#:*!$#App#Fac#BLÄH#F#20240101##ORU:R01#ID!F!1#P#2.5######8859/1\rPID#1\r"
    inbound = parse_message(text.encode("latin-1"))
    raw = build_ack(inbound, AckCode.AE,
                    errors=[AckError(ErrorCode.DATA_TYPE_ERROR, "a#b", "PID", 2, 1)])
    assert raw.startswith(b"MSH#:*!$#BL\xc4H#F#App#Fac#")
    ack = parse_message(raw)
    assert ack.charset == "latin-1" and ack.get("MSH", 18) == "8859/1"
    assert ack.get("MSH", 3) == "BLÄH"
    assert ack.msh.raw(9) == "ACK:R01:ACK"
    assert ack.get("MSA", 2) == "ID#1"
    assert ack.get("ERR", 2, 1) == "PID"
    assert ack.get("ERR", 7) == "a#b"


class TestEnhancedMode:
    def test_pcd01_ne_al_wants_only_the_application_ack(self) -> None:
        inbound = parse_message((CORPUS_HL7V2 / "ipf_pcd01_bp-request.hl7").read_bytes())
        assert ack_mode(inbound) is AckMode.ENHANCED
        plan = plan_acks(inbound, Outcome.ACCEPTED)
        assert (plan.accept, plan.application, plan.immediate) == (None, AckCode.AA, AckCode.AA)
        assert plan_acks(inbound, Outcome.DATA_ERROR).immediate is AckCode.AE

    @pytest.mark.parametrize(
        ("ack15", "ack16", "outcome", "accept", "application"),
        [
            ("AL", "NE", Outcome.ACCEPTED, AckCode.CA, None),
            ("AL", "AL", Outcome.REJECTED, AckCode.CR, AckCode.AR),
            ("ER", "ER", Outcome.ACCEPTED, None, None),
            ("ER", "ER", Outcome.DATA_ERROR, AckCode.CE, AckCode.AE),
            ("SU", "SU", Outcome.ACCEPTED, AckCode.CA, AckCode.AA),
            ("SU", "SU", Outcome.REJECTED, None, None),
            ("NE", "NE", Outcome.REJECTED, None, None),
            ("AL", "", Outcome.ACCEPTED, AckCode.CA, AckCode.AA),  # empty in enhanced = AL
            ("xx", "AL", Outcome.ACCEPTED, AckCode.CA, AckCode.AA),  # unknown = AL
        ],
    )
    def test_conditions(self, ack15: str, ack16: str, outcome: Outcome,
                        accept: AckCode | None, application: AckCode | None) -> None:
        plan = plan_acks(parse_message(msh(ack15=ack15, ack16=ack16)), outcome)
        assert (plan.mode, plan.accept, plan.application) == (
            AckMode.ENHANCED, accept, application)

    def test_commit_and_application_outcomes_can_differ(self) -> None:
        inbound = parse_message(msh(ack15="AL", ack16="AL"))
        plan = plan_acks(inbound, Outcome.ACCEPTED, application_outcome=Outcome.DATA_ERROR)
        assert (plan.accept, plan.application) == (AckCode.CA, AckCode.AE)

    def test_commit_accept_ack(self) -> None:
        inbound = parse_message(msh(ack15="AL", ack16="NE"))
        ack = parse_message(build_ack(inbound, AckCode.CA))
        assert ack.get("MSA", 1) == "CA" and ack.get("MSA", 2) == "CTRL-1"
        assert ack_mode(ack) is AckMode.ORIGINAL  # ACKs never ask to be acknowledged


class TestRejectForUnparseableInput:
    def test_garbage_gets_a_generic_ar(self) -> None:
        ack = parse_message(build_reject_ack(b"\x00garbage\xff", now=NOW))
        assert ack.get("MSA", 1) == "AR"
        assert ack.get("MSA", 2) == ""
        assert ack.version == "2.5"
        assert ack.msh.raw(9) == "ACK"
        assert ack.get("ERR", 3) == "102"
        assert ack.get("ERR", 7) == "message could not be parsed"

    def test_bad_msh2_salvages_the_header_and_keeps_enhanced_mode(self) -> None:
        data = (CORPUS_HL7V2 / "lfh_edge_adt-a01_v26_unix-LF_double-escape-msh2.hl7").read_bytes()
        with pytest.raises(Hl7ParseError) as info:
            parse_message(data)
        ack = parse_message(build_reject_ack(data, info.value))
        assert ack.get("MSA", 1) == "CR"  # MSH-15 is AL: enhanced mode
        assert ack.get("MSA", 2) == "102"
        assert ack.version == "2.6"
        assert (ack.get("MSH", 3), ack.get("MSH", 5)) == ("PACS", "SE050")
        assert ack.get("ERR", 2) == "MSH"
        assert ack.get("ERR", 2, 3) == "2"
        assert "not distinct" in ack.get("ERR", 7)

    def test_version_and_text_are_sanitised(self) -> None:
        ack = parse_message(build_reject_ack("MSH|^~\\&|A\rB|C||||||X|P|9.9\r"))
        assert ack.version == "2.5"
        ack = parse_message(build_reject_ack(None))
        assert ack.get("MSA", 1) == "AR"

    def test_non_default_delimiters_are_flattened(self) -> None:
        data = "MSH#:*!$#App:X#Fac#R#F#20240101##ORU:R01#ID|1#P#2.3\r"
        ack = parse_message(build_reject_ack(data))
        assert ack.get("MSA", 2) == "ID|1"  # escaped for the default delimiters
        assert ack.get("MSH", 5) == "App:X"
        assert ack.msh.raw(9) == "ACK^R01"


def test_every_corpus_message_can_be_acknowledged() -> None:
    for path in corpus_files():
        try:
            inbound = parse_message(path.read_bytes())
        except Hl7ParseError:
            continue
        for code in (AckCode.AA, AckCode.AE):
            ack = parse_message(build_ack(inbound, code, errors=[
                AckError(ErrorCode.DATA_TYPE_ERROR, "x", "OBX", 1, 5)]))
            assert ack.get("MSA", 1) == code.value, path.name
            msa = ack.segment("MSA")
            assert msa is not None and msa.raw(2) == inbound.msh.raw(10), path.name
            assert ack.msh.raw(12) == inbound.msh.raw(12), path.name


def test_corpus_ack_messages_read_as_acks() -> None:
    ce = parse_message((CORPUS_HL7V2 / "ipf_pcd01_ack-CE-error.hl7").read_bytes())
    assert (ce.message_type, ce.get("MSA", 1), ce.get("ERR", 3), ce.get("ERR", 4)) == (
        "ACK", "CE", "100", "E")


@given(st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=5)),
                                               timezone(timedelta(hours=-3, minutes=-30))])))
@settings(max_examples=300, deadline=None)
def test_timestamp_fast_path_writes_what_strftime_writes(moment: datetime) -> None:
    # hub.hl7v2.ack._timestamp formats UTC itself (MSH-7 of every ACK); other zones and years
    # before 1000 go through strftime. Either way the text is strftime's.
    assert _timestamp(moment) == moment.strftime("%Y%m%d%H%M%S%z")


def test_timestamp_needs_a_timezone() -> None:
    with pytest.raises(ValueError):
        _timestamp(datetime(2024, 5, 6, 7, 8, 9))
