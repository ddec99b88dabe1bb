"""HL7v2 out: Observations as ORU^R01 over MLLP to an interface engine, one message per resource.

Built as ER7 with every value escaped by :func:`hub.hl7v2.escape` (``| ^ & ~ \\`` become
``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\``, line breaks ``\\X0D\\``/``\\X0A\\``), then validated with hl7apy
(STRICT, ORU_R01 structure) before it is sent: a message hl7apy refuses is dead-lettered, never
sent. Segments: MSH, PID (PID-3 the hub's patient id; PID-5 name type ``U`` — the hub does not
send names), OBR (OBR-4 the panel or the Observation's code), one OBX per value (a panel's
components each get one; NM for quantities, ST for strings, CWE for codes), OBX-11 from status
(final F, preliminary P, amended/corrected C).

MSH-10 is derived from the resource id and version, so a re-sent message (answer lost, worker
killed) carries the same control id and a receiver that deduplicates on MSH-10 drops it.

ACK: AA/CA delivered; AE/AR/CE/CR dead-lettered with MSA-3/ERR-8 as the reason; no ACK (timeout,
closed connection) or an ACK for another control id → retry. The MLLP client is here (a few
lines over :mod:`hub.hl7v2` framing) because the hub core never imports a connector.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message as hl7apy_parse

from hub.errors import RetriableDeliveryError
from hub.hl7v2 import Frame, MllpDecoder, escape, frame, parse_message
from hub.store.delivery import Claimed
from hub.sync.config import Hl7v2AckDestination, Hl7v2Destination, Limits
from hub.sync.policy import OK, Attempt, CircuitBreaker, Pacer, Verdict
from hub.sync.routing import Route

STATUS = {"final": "F", "preliminary": "P", "amended": "C", "corrected": "C",
          "cancelled": "X", "entered-in-error": "W"}
CODE_SYSTEMS = {"http://loinc.org": "LN", "http://unitsofmeasure.org": "UCUM",
                "urn:iso:std:iso:11073:10101": "MDC"}


def hl7_time(value: str | None) -> str:
    """FHIR dateTime → HL7 DTM ``YYYYMMDDHHMMSS+ZZZZ`` (UTC)."""
    if not value:
        return ""
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return ""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")


def control_id(res_id: str, version: int) -> str:
    """20 characters (MSH-10 is ST(20) in 2.5.1), stable for one resource version."""
    digest = hashlib.sha256(f"{res_id}@{version}".encode()).digest()
    return base64.b32encode(digest).decode()[:20]


def _cwe(concept: dict[str, Any] | None) -> str:
    for coding in (concept or {}).get("coding") or []:
        system = CODE_SYSTEMS.get(coding.get("system", ""), "L")
        return "^".join((escape(str(coding.get("code", ""))),
                         escape(str(coding.get("display", ""))), system))
    return escape(str((concept or {}).get("text", "")))


def _value(holder: dict[str, Any]) -> tuple[str, str, str]:
    """(OBX-2 type, OBX-5 value, OBX-6 units) of an Observation or component."""
    if "valueQuantity" in holder:
        q = holder["valueQuantity"]
        unit = str(q.get("code") or q.get("unit") or "")
        units = f"{escape(unit)}^{escape(str(q.get('unit') or unit))}^UCUM" if unit else ""
        return "NM", escape(str(q.get("value", ""))), units
    if "valueString" in holder:
        return "ST", escape(str(holder["valueString"])), ""
    if "valueCodeableConcept" in holder:
        return "CWE", _cwe(holder["valueCodeableConcept"]), ""
    if "valueBoolean" in holder:
        return "ST", "true" if holder["valueBoolean"] else "false", ""
    if "valueInteger" in holder:
        return "NM", str(holder["valueInteger"]), ""
    return "", "", ""


def build_oru(obs: dict[str, Any], version_id: int, dest: Hl7v2Destination,
              now: datetime | None = None) -> bytes:
    """One ORU^R01 for one Observation (see module docstring)."""
    sent = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S+0000")
    subject = str((obs.get("subject") or {}).get("reference", ""))
    patient = subject.split("/", 1)[1] if subject.startswith("Patient/") else subject
    effective = hl7_time(obs.get("effectiveDateTime")
                         or (obs.get("effectivePeriod") or {}).get("start")
                         or obs.get("effectiveInstant"))
    status = STATUS.get(str(obs.get("status")), "F")
    device = str((obs.get("device") or {}).get("reference", "")).split("/")[-1]
    msh = ["MSH", "^~\\&", escape(dest.sending_application), escape(dest.sending_facility),
           escape(dest.receiving_application), escape(dest.receiving_facility), sent, "",
           "ORU^R01^ORU_R01", control_id(str(obs.get("id")), version_id), "P", dest.version,
           "", "", "AL", "NE", "", "UNICODE UTF-8"]
    segments = ["|".join(msh),
                f"PID|1||{escape(patient)}^^^HUB^PI||^^^^^^U",
                f"OBR|1||{escape(str(obs.get('id')))}^{escape(dest.sending_application)}|"
                f"{_cwe(obs.get('code'))}|||{effective}"]
    holders = obs.get("component") or [obs]
    n = 0
    for holder in holders:
        vtype, value, units = _value(holder)
        if not vtype:
            continue
        n += 1
        code = _cwe(holder.get("code") or obs.get("code"))
        segments.append(f"OBX|{n}|{vtype}|{code}||{value}|{units}|||||{status}|||{effective}"
                        + (f"||||{escape(device)}" if device else ""))
    if n == 0:
        raise ValueError("Observation without a value")
    return ("\r".join(segments) + "\r").encode()


def validate(message: bytes) -> None:
    """hl7apy STRICT validation as ORU_R01; raises ValueError with hl7apy's reason."""
    try:
        parsed = hl7apy_parse(message.decode(),
                              validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
        parsed.validate()
    except Exception as exc:
        # hl7apy's messages name segments and fields, not values.
        raise ValueError(f"hl7apy: {type(exc).__name__}: {str(exc)[:200]}") from None


class MllpConnection:
    """A blocking MLLP client connection (one per lane): send a frame, read the next frame."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._sock: socket.socket | None = None
        self._decoder = MllpDecoder()
        self._frames: list[bytes] = []

    def exchange(self, payload: bytes) -> bytes:
        try:
            if self._sock is None:
                self._sock = socket.create_connection((self.host, self.port), self.timeout)
                self._decoder = MllpDecoder()
                self._frames = []
            self._sock.settimeout(self.timeout)
            self._sock.sendall(frame(payload))
            deadline = time.monotonic() + self.timeout
            while not self._frames:
                self._sock.settimeout(max(0.01, deadline - time.monotonic()))
                data = self._sock.recv(65536)
                if not data:
                    raise ConnectionError("closed by peer")
                self._frames.extend(f.payload for f in self._decoder.feed(data)
                                    if isinstance(f, Frame))
            return self._frames.pop(0)
        except (OSError, ConnectionError) as exc:
            self.close()
            raise RetriableDeliveryError(f"no ACK ({type(exc).__name__})") from None

    def send(self, payload: bytes) -> None:
        """Write one frame without waiting for an answer (a peer told to send none)."""
        try:
            if self._sock is not None and self._peer_closed():
                self.close()
            if self._sock is None:
                self._sock = socket.create_connection((self.host, self.port), self.timeout)
            self._sock.settimeout(self.timeout)
            self._sock.sendall(frame(payload))
        except OSError as exc:
            self.close()
            raise RetriableDeliveryError(f"not sent ({type(exc).__name__})") from None

    def _peer_closed(self) -> bool:
        """Discard whatever the peer sent unasked; True if it closed the connection."""
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(65536, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:
                return True
            if not data:
                return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def read_ack(conn: MllpConnection, message: bytes, breaker: CircuitBreaker) -> Attempt:
    """Send ``message`` and judge the answer: AA/CA delivered; AE/AR/CE/CR refused for good
    (MSA-3, else ERR-8/7/3 as the reason); no answer, or one for another control id, retried."""
    sent_id = parse_message(message).control_id
    try:
        ack = parse_message(conn.exchange(message))
    except RetriableDeliveryError as exc:
        breaker.record(False)
        return Attempt(Verdict.RETRY, exc.message)
    except Exception as exc:
        breaker.record(False)
        conn.close()
        return Attempt(Verdict.RETRY, f"unreadable ACK ({type(exc).__name__})")
    msa = ack.segment("MSA")
    if msa is None or msa.field(2) != sent_id:
        breaker.record(False)
        conn.close()
        return Attempt(Verdict.RETRY, "ACK does not acknowledge this message")
    breaker.record(True)
    code = msa.field(1)
    if code in ("AA", "CA"):
        return OK
    err = ack.segment("ERR")
    # MSA-3 (before v2.5), else ERR-8 user message, ERR-7 diagnostics, ERR-3 code text.
    text = msa.text(3) or (next((t for t in (err.text(8), err.text(7), err.component(3, 2))
                                 if t), "") if err is not None else "")
    return Attempt(Verdict.FATAL, f"{code}: {text}"[:500], detail={"ack": code, "text": text})


class MllpPeer(ABC):
    """An MLLP destination: one connection per lane (thread) to its host and port, one pace
    and one circuit for all lanes."""

    def __init__(self, dest: Hl7v2Destination | Hl7v2AckDestination, limits: Limits) -> None:
        self.name = dest.name
        self.host, self.port, self.timeout = dest.host, dest.port, dest.ack_timeout_secs
        self.limits = limits
        self.pacer = Pacer(limits.requests_per_sec, None)
        self.breaker = CircuitBreaker(limits.circuit_failures, limits.circuit_open_secs)
        self._local = threading.local()

    @abstractmethod
    def send(self, message: bytes) -> Attempt:
        """Send one message and say how it went."""

    def send_each(self, items: list[Claimed], message_for: Callable[[Claimed], bytes | Attempt],
                  stop: threading.Event | None) -> dict[int, Attempt]:
        """Send each item's message in order (an item whose message cannot be made gets that
        Attempt). A retry (the peer is down or silent) ends the claim: the rest waits for the
        next try rather than each item timing out in turn."""
        out: dict[int, Attempt] = {}
        for item in items:
            built = message_for(item)
            if isinstance(built, Attempt):
                out[item.id] = built
                continue
            if stop is not None and stop.is_set():
                out[item.id] = Attempt(Verdict.RETRY, "worker stopping")
                continue
            self.pacer.wait(1, stop=stop)
            out[item.id] = self.send(built)
            if out[item.id].verdict is Verdict.RETRY:
                for rest in items:
                    out.setdefault(rest.id, out[item.id])
                break
        return out

    def _conn(self) -> MllpConnection:
        conn: MllpConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = MllpConnection(self.host, self.port, self.timeout)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()

    def connects(self) -> str:
        started = time.monotonic()
        with socket.create_connection((self.host, self.port), self.timeout):
            pass
        took = (time.monotonic() - started) * 1000
        return f"MLLP peer {self.host}:{self.port} accepts connections ({took:.0f} ms)"


class Hl7v2Sender(MllpPeer):
    """Delivers Observations as ORU^R01 and reads each ACK (see module docstring)."""

    kind = "hl7v2"

    def __init__(self, dest: Hl7v2Destination, limits: Limits, *, route: Route | None = None
                 ) -> None:
        super().__init__(dest, limits)
        self.dest = dest
        self.route = route

    def message_for(self, item: Claimed) -> bytes | Attempt:
        res = item.resource
        if res is None:
            return Attempt(Verdict.OK, "resource no longer stored", skipped=True)
        why = self.route.why_not(res) if self.route is not None else None
        if why is not None:
            return Attempt(Verdict.OK, why, skipped=True)
        if res.get("resourceType") != "Observation":
            return Attempt(Verdict.OK, "HL7v2 out carries Observations only", skipped=True)
        try:
            message = build_oru(res, item.current_version or item.version_id, self.dest)
            validate(message)
        except ValueError as exc:
            return Attempt(Verdict.FATAL, f"cannot build ORU^R01: {exc}")
        return message

    def deliver(self, items: list[Claimed], stop: threading.Event | None = None
                ) -> dict[int, Attempt]:
        return self.send_each(items, self.message_for, stop)

    def send(self, message: bytes) -> Attempt:
        return read_ack(self._conn(), message, self.breaker)

    def check(self) -> str:
        return f"{self.name}: {self.connects()}"

    def preview(self, items: list[Claimed]) -> dict[str, Any]:
        messages, skipped = [], []
        for item in items:
            built = self.message_for(item)
            if isinstance(built, Attempt):
                skipped.append({"outboxId": item.id, "reason": built.reason})
            else:
                messages.append(built.decode().replace("\r", "\n"))
        return {"destination": self.name, "messages": messages, "skipped": skipped}
