"""Build HL7v2 acknowledgements (ACK) as ER7 bytes, and decide which ones a message wants.

The ACK's MSH mirrors the inbound one: sender and receiver swapped (MSH-3/4 <-> MSH-5/6), the
same delimiters, processing id (MSH-11), version (MSH-12) and character set (MSH-18); MSH-9 is
``ACK^<trigger>^ACK`` (as far as the version's MSH-9 has components), MSH-7 is now and MSH-10
fresh. MSA-2 echoes the inbound MSH-10 exactly as sent.

Acknowledgement modes (HL7 v2 chapter 2, tables 0008 and 0155):

- Original mode (MSH-15 and MSH-16 both empty): one application ACK, AA / AE / AR.
- Enhanced mode (either one valued): an *accept* ACK (CA / CE / CR: "committed to safe
  storage" or not) sent when MSH-15's condition holds, and an *application* ACK (AA / AE / AR)
  when MSH-16's holds. AL always, NE never, ER on error/reject only, SU on success only. An
  empty or unknown condition in enhanced mode is treated as AL: an unwanted ACK is harmless,
  a missing one leaves the sender waiting or resending.

The ACK returned on the connection is the accept ACK when it is due, else the application ACK
(:attr:`AckPlan.immediate`). An application ACK that was not that answer is *deferred*: once
the message is processed, :func:`deferred_application_ack` says whether one is owed, and it is
sent as a message of its own (v2.5 §2.9.3: the receiver initiates it), asking for an accept ACK
in return (``accept_ack``/``application_ack`` of :func:`build_ack`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum, StrEnum

from hub.hl7v2.encoding import DEFAULT_ENCODING, EncodingChars
from hub.hl7v2.er7 import Message
from hub.hl7v2.errors import ErrorCode, Hl7ParseError
from hub.hl7v2.escape import escape


class AckCode(StrEnum):
    """HL7 table 0008 acknowledgment codes (MSA-1)."""

    AA = "AA"  # application accept
    AE = "AE"  # application error
    AR = "AR"  # application reject
    CA = "CA"  # commit accept
    CE = "CE"  # commit error
    CR = "CR"  # commit reject


class Outcome(Enum):
    """What happened to a message: stored/processed, bad data, or refused outright."""

    ACCEPTED = "accepted"
    DATA_ERROR = "data_error"  # the message is understood but its content is wrong (AE/CE)
    REJECTED = "rejected"  # unsupported type/version, unparseable, or cannot be stored (AR/CR)


class AckMode(Enum):
    ORIGINAL = "original"
    ENHANCED = "enhanced"


_APPLICATION = {Outcome.ACCEPTED: AckCode.AA, Outcome.DATA_ERROR: AckCode.AE,
                Outcome.REJECTED: AckCode.AR}
_ACCEPT = {Outcome.ACCEPTED: AckCode.CA, Outcome.DATA_ERROR: AckCode.CE,
           Outcome.REJECTED: AckCode.CR}


@dataclass(frozen=True, slots=True)
class AckPlan:
    """Which ACKs to send. ``None`` means "do not send that one".

    Over a synchronous MLLP exchange the ACK returned on the connection is ``accept`` when it
    is due, otherwise ``application`` (e.g. IHE PCD-01's MSH-15=NE, MSH-16=AL: the AA/AE/AR is
    the answer). When both are due, ``application`` is a separate message sent back later.
    """

    mode: AckMode
    accept: AckCode | None
    application: AckCode | None

    @property
    def immediate(self) -> AckCode | None:
        """The ACK to return on the connection that carried the message, if any."""
        return self.accept if self.accept is not None else self.application


@dataclass(frozen=True, slots=True)
class AckError:
    """One ERR segment: a table 0357 code, a PHI-free reason and where the problem is."""

    code: ErrorCode
    reason: str
    segment: str | None = None
    sequence: int | None = None
    field: int | None = None
    repetition: int | None = None
    component: int | None = None
    severity: str = "E"  # HL7 table 0516: E error, W warning, I information, F fatal

    @classmethod
    def from_parse_error(cls, err: Hl7ParseError) -> AckError:
        return cls(err.error_code, err.reason, err.segment, err.sequence, err.field)


def ack_mode(msg: Message) -> AckMode:
    """Enhanced if MSH-15 or MSH-16 is valued, else original."""
    msh = msg.msh
    if msh.field(15).strip() or msh.field(16).strip():
        return AckMode.ENHANCED
    return AckMode.ORIGINAL


def _condition_holds(condition: str, outcome: Outcome) -> bool:
    cond = condition.strip().upper()
    if cond == "NE":
        return False
    if cond == "ER":
        return outcome is not Outcome.ACCEPTED
    if cond == "SU":
        return outcome is Outcome.ACCEPTED
    return True  # AL, empty or unknown: see the module docstring


def plan_acks(
    msg: Message, outcome: Outcome, application_outcome: Outcome | None = None
) -> AckPlan:
    """Decide the ACKs for ``msg``: ``outcome`` is the commit (storage) result and
    ``application_outcome`` (default: the same) the processing result.

    Original mode: only ``application`` is set (AA/AE/AR). Enhanced mode: ``accept``
    (CA/CE/CR) per MSH-15 and ``application`` (AA/AE/AR) per MSH-16.
    """
    app_outcome = outcome if application_outcome is None else application_outcome
    if ack_mode(msg) is AckMode.ORIGINAL:
        return AckPlan(AckMode.ORIGINAL, None, _APPLICATION[app_outcome])
    msh = msg.msh
    accept = _ACCEPT[outcome] if _condition_holds(msh.field(15), outcome) else None
    application = (_APPLICATION[app_outcome]
                   if _condition_holds(msh.field(16), app_outcome) else None)
    return AckPlan(AckMode.ENHANCED, accept, application)


def deferred_application_ack(msg: Message, outcome: Outcome) -> AckCode | None:
    """The application ACK owed once ``msg`` has been processed with ``outcome``, beyond what
    the door answered: None in original mode, when the door's answer already was the application
    ACK (e.g. IHE PCD-01's NE/AL), or when MSH-16's condition does not hold for ``outcome``."""
    if ack_mode(msg) is AckMode.ORIGINAL:
        return None
    at_door = plan_acks(msg, Outcome.ACCEPTED)
    if at_door.accept is None and at_door.application is not None:
        return None  # the door answered with the application ACK already
    return plan_acks(msg, Outcome.ACCEPTED, outcome).application


def _version_tuple(version: str) -> tuple[int, ...]:
    m = re.match(r"\s*(\d+)\.(\d+)(?:\.(\d+))?", version)
    if m is None:
        return (2, 5)  # unknown version: answer in the v2.5 style
    return tuple(int(g) for g in m.groups() if g is not None)


def _timestamp(now: datetime | None) -> str:
    moment = now if now is not None else datetime.now(UTC)
    if moment.tzinfo is UTC and moment.year >= 1000:
        # What strftime below writes for UTC, without its format rewriting (every ACK's MSH-7).
        # Measured (cachegrind, bench.hl7_cost listener): strftime ~21,000 instructions an ACK.
        return "%04d%02d%02d%02d%02d%02d+0000" % (  # noqa: UP031
            moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)
    if moment.tzinfo is None:
        raise ValueError("ACK timestamps need a timezone-aware datetime")
    return moment.strftime("%Y%m%d%H%M%S%z")


def new_control_id() -> str:
    """A fresh MSH-10: 20 hex characters (80 random bits), within every version's length."""
    return uuid.uuid4().hex[:20]


def build_ack(
    msg: Message,
    code: AckCode,
    *,
    errors: Sequence[AckError] = (),
    text: str | None = None,
    control_id: str | None = None,
    now: datetime | None = None,
    accept_ack: str = "",
    application_ack: str = "",
) -> bytes:
    """The ACK answering ``msg`` with MSA-1 ``code``, encoded in the message's charset.

    ``accept_ack``/``application_ack`` fill the ACK's own MSH-15/MSH-16 (table 0155; from v2.2,
    where they exist): a deferred application ACK asks the original sender for an accept ACK.

    ``errors`` become ERR segments: for v2.5 and later ERR-2 (location ``SEG^seq^field``),
    ERR-3 (``code^text^HL70357``), ERR-4 severity and ERR-7 the reason; for older versions
    ERR-1 (``SEG^seq^field^code&text&HL70357``) with the reason also in MSA-3. ``text`` goes to
    MSA-3 (older versions only; v2.5+ deprecates it in favour of ERR). All free text is
    escaped with the message's own delimiters.
    """
    msh = msg.msh
    enc = msg.encoding
    raw = msh.raw
    key = (raw(3), raw(4), raw(5), raw(6), raw(9), raw(11), raw(12), raw(17), raw(18), enc,
           msg.charset, accept_ack, application_ack)
    cached = _HEADERS.get(key)
    if cached is None:
        cached = _header(msg, accept_ack, application_ack)
        if len(_HEADERS) >= _HEADERS_MAX:
            _HEADERS.clear()
        _HEADERS[key] = cached
    head, middle, tail, version = cached
    fs = enc.field
    segments = [head + fs + _timestamp(now) + middle + fs + escape(control_id or new_control_id(),
                                                                  enc) + tail]
    segments.extend(_msa_err(code, raw(10), errors, text, version, enc))
    return ("\r".join(segments) + "\r").encode(msg.charset, errors="replace")


# The ACK's MSH less MSH-7 (now) and MSH-10 (fresh), by the inbound MSH fields it is made of
# and the ACK's own MSH-15/16: the same for every message of a sender. Made per message it
# cost about half of build_ack (a version regex, MSH-9 split, a list joined).
_HEADERS: dict[tuple[object, ...], tuple[str, str, str, tuple[int, ...]]] = {}
_HEADERS_MAX = 256


def _header(msg: Message, accept_ack: str, application_ack: str
            ) -> tuple[str, str, str, tuple[int, ...]]:
    """MSH-1..6, then MSH-8..9, then MSH-11..18 (trailing empty fields dropped), as text to
    put around MSH-7 and MSH-10; and the version the ACK follows."""
    msh = msg.msh
    enc = msg.encoding
    version = _version_tuple(msg.version)
    trigger = msh.raw(9).split(enc.repetition)[0].split(enc.component)
    msh9 = _msh9(trigger[1] if len(trigger) > 1 else "", version, enc)
    fs = enc.field
    # MSH-10 is never empty, so dropping trailing empty fields never reaches it.
    tail = [msh.raw(11), msh.raw(12), "", "",
            accept_ack if version >= (2, 2) else "", application_ack if version >= (2, 2) else "",
            msh.raw(17), msh.raw(18)]
    while tail and not tail[-1]:
        tail.pop()
    return (fs.join(["MSH", enc.msh2, msh.raw(5), msh.raw(6), msh.raw(3), msh.raw(4)]),
            fs + fs + msh9, "".join(fs + f for f in tail), version)


def _msh9(trigger: str, version: tuple[int, ...], enc: EncodingChars) -> str:
    # MSH-9 gained the trigger component in v2.2 and the message structure in v2.3.1.
    if version < (2, 2) or not trigger:
        return "ACK"
    if version < (2, 3, 1):
        return f"ACK{enc.component}{trigger}"
    return f"ACK{enc.component}{trigger}{enc.component}ACK"


def _join(fields: list[str], fs: str) -> str:
    while len(fields) > 3 and not fields[-1]:
        fields.pop()  # no trailing empty fields
    return fields[0] + fs + fs.join(fields[1:])


def _msa_err(
    code: AckCode,
    control_id_raw: str,
    errors: Sequence[AckError],
    text: str | None,
    version: tuple[int, ...],
    enc: EncodingChars,
) -> list[str]:
    cs, ss, fs = enc.component, enc.subcomponent, enc.field
    modern = version >= (2, 5)
    msa_text = "" if modern else escape(text or (errors[0].reason if errors else ""), enc)
    out = [_join(["MSA", str(code), control_id_raw, msa_text], fs)]
    for err in errors:
        where = [err.segment or "", _num(err.sequence), _num(err.field)]
        if modern:
            # ERL: segment ^ sequence ^ field ^ field repetition ^ component
            location = cs.join([*where, _num(err.repetition), _num(err.component)])
            coded = cs.join([str(int(err.code)), escape(err.code.text, enc), "HL70357"])
            out.append(_join(["ERR", "", location.rstrip(cs), coded, err.severity, "", "",
                              escape(err.reason, enc)], fs))
        else:
            coded = ss.join([str(int(err.code)), escape(err.code.text, enc), "HL70357"])
            out.append(_join(["ERR", cs.join([*where, coded])], fs))
    return out


def _num(n: int | None) -> str:
    return "" if n is None else str(n)


_VERSION = re.compile(r"2\.\d{1,2}(?:\.\d{1,2})?\Z")
_SAFE = re.compile(r"[\x20-\x7e]{1,199}\Z")


def build_reject_ack(
    data: bytes | str | None,
    error: Hl7ParseError | AckError | None = None,
    *,
    control_id: str | None = None,
    now: datetime | None = None,
) -> bytes:
    """A minimal AR (or CR, if the header asked for enhanced mode) for input with no usable MSH.

    Best effort, never raises: if ``data`` starts with something like an MSH whose field
    separator can be found, its MSH-3..6, 10, 11, 12, 15 and 16 are salvaged (swapped and
    echoed) so the sender can correlate the answer; only printable ASCII values are kept. The
    reply uses the default delimiters ``|^~\\&``, version MSH-12 if it looks like ``2.x``
    (else 2.5), and ASCII bytes. Without a usable header MSA-2 is empty.
    """
    hdr = _salvage_header(data)
    version = hdr.get("12", "")
    if not _VERSION.match(version):
        version = "2.5"
    enhanced = bool(hdr.get("15") or hdr.get("16"))
    if isinstance(error, Hl7ParseError):
        error = AckError.from_parse_error(error)
    if error is None:
        error = AckError(ErrorCode.DATA_TYPE_ERROR, "message could not be parsed")
    enc = DEFAULT_ENCODING
    header = ["MSH", enc.msh2, hdr.get("5", ""), hdr.get("6", ""), hdr.get("3", ""),
              hdr.get("4", ""), _timestamp(now), "",
              _msh9(hdr.get("trigger", ""), _version_tuple(version), enc),
              escape(control_id or new_control_id()), hdr.get("11", "") or "P", version]
    code = AckCode.CR if enhanced else AckCode.AR
    segments = [_join(header, enc.field)]
    segments.extend(_msa_err(code, hdr.get("10", ""), [error], None, _version_tuple(version),
                             enc))
    return ("\r".join(segments) + "\r").encode("ascii", errors="replace")


def _salvage_header(data: bytes | str | None) -> dict[str, str]:
    """MSH fields (keyed by number, and ``"trigger"``) safe to copy into a default-delimited ACK."""
    if data is None:
        return {}
    text = data.decode("latin-1") if isinstance(data, bytes) else data
    text = text.lstrip("\ufeff\xef\xbb\xbf \t\r\n\x00\x0b")
    if not text.startswith("MSH") or len(text) < 5:
        return {}
    fs = text[3]
    if fs.isalnum() or fs.isspace() or not fs.isprintable():
        return {}
    parts = re.split(r"[\r\n]", text, maxsplit=1)[0].split(fs)  # parts[n - 1] is MSH-n
    component = parts[1][:1] or "^"
    # With the default delimiters a salvaged value is valid ER7 as it stands; with any others
    # it is flattened to escaped text, since our reply uses the defaults.
    as_is = fs == "|" and parts[1][:4] == DEFAULT_ENCODING.msh2
    out: dict[str, str] = {}
    for n in (3, 4, 5, 6, 9, 10, 11, 12, 15, 16):
        value = parts[n - 1] if n - 1 < len(parts) else ""
        if not _SAFE.match(value):
            continue  # empty, too long, or not printable ASCII: leave it out
        if n == 9:
            pieces = value.split(component)
            if len(pieces) > 1 and pieces[1].isalnum():
                out["trigger"] = pieces[1]
        elif n in (12, 15, 16):
            out[str(n)] = value.split(component)[0]
        else:
            out[str(n)] = value if as_is else escape(value)
    return out
