"""Generic FHIR R4 REST destination: idempotent writes in batch or transaction Bundles.

Idempotent by construction, chosen from the server's CapabilityStatement (``write_mode: auto``):

* ``put``: ``PUT [base]/Type/<deterministic id>`` where the server allows client ids
  (``updateCreate``). A re-send rewrites the same resource: at most one extra version.
* ``conditional``: ``POST`` with ``If-None-Exist: identifier=<system>|<value>`` on the hub's
  deterministic identifier (``urn:uuid:<id>``) where ``conditionalCreate`` is supported.
  Conditional create races on many servers (HAPI #3141, fhir-server #1382), so the hub never has
  two writes of one identifier in flight: one resource is one outbox ``order_key`` stream per
  destination (claims are ordered per patient) and versions of one resource are coalesced into
  one write per request.
* ``create``: plain ``POST`` for servers with neither (Epic). An item that may already have been
  applied (a previous attempt's answer was lost) is searched by identifier first.

A batch answer is reconciled entry by entry: 2xx delivered, 429/5xx retried, 409/412 re-read and
retried singly (at most twice), others dead-lettered with the entry's OperationOutcome. A Bundle
refused as a whole (a failed transaction, a 400/413 on a batch) is split in halves and re-sent
until the refused entries stand alone.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from hub.errors import ConfigurationError, RetriableDeliveryError
from hub.fhir.ids import URI_SYSTEM
from hub.store.delivery import Claimed
from hub.sync import profiles
from hub.sync.auth import RequestAuth, build_auth
from hub.sync.config import FhirDestination, HealthLakeDestination, Limits
from hub.sync.policy import OK, Attempt, CircuitBreaker, Pacer, Verdict, classify, retry_after_secs
from hub.sync.routing import Route

FHIR_JSON = "application/fhir+json"
MAX_CONFLICT_RETRIES = 2


@dataclass
class Write:
    """One resource to send, and the outbox rows whose delivery it settles."""

    resource: dict[str, Any]
    mode: str
    items: list[Claimed] = field(default_factory=list)

    @property
    def rtype(self) -> str:
        return str(self.resource["resourceType"])

    @property
    def rid(self) -> str:
        return str(self.resource["id"])

    @property
    def in_doubt(self) -> bool:
        """A previous attempt may have reached the server (its answer was lost)."""
        return any(i.attempts > 1 for i in self.items)


def identifier_query(resource: dict[str, Any]) -> str:
    """``identifier=system|value`` on the hub's deterministic identifier (added if absent)."""
    ident = next((i for i in resource.get("identifier") or []
                  if i.get("system") == URI_SYSTEM), None)
    if ident is None:
        ident = {"system": URI_SYSTEM, "value": f"urn:uuid:{resource['id']}"}
        resource.setdefault("identifier", []).append(ident)
    return "identifier=" + quote(f"{ident['system']}|{ident['value']}", safe=":")


def outcome_of(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome" \
        else None


def _status_code(text: str) -> int:
    try:
        return int(str(text).split()[0])
    except (ValueError, IndexError):
        return 0


class FhirRestSender:
    """Delivers claimed outbox rows to one FHIR R4 server (see module docstring)."""

    kind = "fhir"

    def __init__(self, dest: FhirDestination | HealthLakeDestination, limits: Limits, *,
                 http: httpx.Client | None = None, auth: RequestAuth | None = None,
                 route: Route | None = None, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.name = dest.name
        self.base = str(dest.base_url).rstrip("/") + "/"
        self.limits = limits
        self.route = route
        self.profile = dest.profile if isinstance(dest, FhirDestination) else None
        self.configured_mode = dest.write_mode if isinstance(dest, FhirDestination) else "put"
        self.http = http or httpx.Client(
            timeout=limits.timeout_secs, headers={"Accept": FHIR_JSON},
            limits=httpx.Limits(max_connections=limits.concurrency + 2,
                                max_keepalive_connections=limits.concurrency + 2))
        self.auth = auth or build_auth(dest.auth, self.http, region=getattr(dest, "region", None))
        self.pacer = Pacer(limits.requests_per_sec, limits.entries_per_sec,
                           limits.transaction_cost, clock=clock)
        self.breaker = CircuitBreaker(limits.circuit_failures, limits.circuit_open_secs, clock)
        self._caps_lock = threading.Lock()
        self._modes: dict[str, str] | None = None
        self.requests = 0

    def close(self) -> None:
        self.http.close()

    # ------------------------------------------------------------ capabilities

    def capabilities(self) -> dict[str, Any]:
        """``GET [base]/metadata`` (raises RetriableDeliveryError if the server is unreachable)."""
        answer = self.request("GET", self.base + "metadata")
        if answer.status_code != 200:
            raise RetriableDeliveryError(f"metadata: HTTP {answer.status_code}")
        body: dict[str, Any] = answer.json()
        return body

    def modes_from(self, caps: dict[str, Any]) -> dict[str, str]:
        modes: dict[str, str] = {}
        for rest in caps.get("rest") or []:
            if rest.get("mode", "server") != "server":
                continue
            for res in rest.get("resource") or []:
                kinds = {i.get("code") for i in res.get("interaction") or []}
                if res.get("updateCreate") and "update" in kinds:
                    modes[res["type"]] = "put"
                elif res.get("conditionalCreate") and "create" in kinds:
                    modes[res["type"]] = "conditional"
                elif "create" in kinds:
                    modes[res["type"]] = "create"
        return modes

    def write_mode(self, rtype: str) -> str:
        """How resources of ``rtype`` are written here (see module docstring)."""
        if self.configured_mode != "auto":
            return self.configured_mode
        with self._caps_lock:
            if self._modes is None:
                self._modes = self.modes_from(self.capabilities())
            mode = self._modes.get(rtype)
        if mode is None:
            raise ConfigurationError(f"destination {self.name} cannot create {rtype}")
        return mode

    # ------------------------------------------------------------ HTTP

    def extra_headers(self, method: str, body: bytes, writes: list[Write]) -> dict[str, str]:
        return {}

    def throttled(self, response: httpx.Response) -> bool:
        return response.status_code == 429

    def request(self, method: str, url: str, *, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> httpx.Response:
        """One HTTP exchange with auth; a 401 re-authenticates once. Transport errors become
        :class:`RetriableDeliveryError` (timeouts, refused and reset connections)."""
        for attempt in (1, 2):
            req = self.http.build_request(method, url, content=body, headers=headers)
            self.auth.apply(req)
            try:
                answer = self.http.send(req)
            except httpx.TransportError as exc:
                raise RetriableDeliveryError(f"{type(exc).__name__} from destination") from None
            self.requests += 1
            if answer.status_code == 401 and attempt == 1 and self.auth.reauthenticate():
                continue
            return answer
        raise AssertionError("unreachable")

    # ------------------------------------------------------------ planning

    def plan(self, items: list[Claimed]) -> tuple[list[Write], dict[int, Attempt]]:
        """Writes to send (route, profile, coalesced per resource) and items settled already."""
        writes: dict[tuple[str, str], Write] = {}
        settled: dict[int, Attempt] = {}
        for item in items:
            res = item.resource
            if res is None:
                settled[item.id] = Attempt(Verdict.OK, "resource no longer stored", skipped=True)
                continue
            why = self.route.why_not(res) if self.route is not None else None
            if why is not None:
                settled[item.id] = Attempt(Verdict.OK, why, skipped=True)
                continue
            try:
                outgoing = profiles.apply(self.profile, res) if self.profile else [res]
            except profiles.Skip as skip:
                settled[item.id] = Attempt(Verdict.OK, skip.reason, skipped=True)
                continue
            for out in outgoing:
                key = (out["resourceType"], out["id"])
                if key in writes:
                    writes[key].resource = out  # a newer version of the same resource
                    writes[key].items.append(item)
                    continue
                try:
                    mode = self.write_mode(out["resourceType"])
                except ConfigurationError as exc:
                    settled[item.id] = Attempt(Verdict.FATAL, exc.message)
                    continue
                writes[key] = Write(out, mode, [item])
        return list(writes.values()), settled

    def entry(self, write: Write) -> dict[str, Any]:
        res = write.resource
        if write.mode == "put":
            url = f"{write.rtype}/{write.rid}"
            return {"fullUrl": self.base + url, "resource": res,
                    "request": {"method": "PUT", "url": url}}
        query = identifier_query(res)
        body = {k: v for k, v in res.items() if k != "id"}
        request: dict[str, Any] = {"method": "POST", "url": write.rtype}
        if write.mode == "conditional":
            request["ifNoneExist"] = query
        return {"fullUrl": f"urn:uuid:{write.rid}", "resource": body, "request": request}

    # ------------------------------------------------------------ delivery

    def deliver(self, items: list[Claimed], stop: threading.Event | None = None
                ) -> dict[int, Attempt]:
        """Send ``items``; the attempt's outcome per outbox row id."""
        try:
            writes, settled = self.plan(items)
        except RetriableDeliveryError as exc:
            self.breaker.record(False)
            return {i.id: Attempt(Verdict.RETRY, exc.message, retry_after=exc.retry_after)
                    for i in items}
        writes = [w for w in writes if not self._already_there(w, settled)]
        per_write: list[tuple[Write, Attempt]] = []
        if self.limits.bundle == "none":
            for w in writes:
                if stop is not None and stop.is_set():
                    per_write.append((w, Attempt(Verdict.RETRY, "worker stopping")))
                    continue
                per_write.append((w, self.send_single(w, stop)))
        else:
            size = self.limits.bundle_size or 100
            for i in range(0, len(writes), size):
                chunk = writes[i:i + size]
                per_write.extend(zip(chunk, self.send_bundle(chunk, stop), strict=True))
        return merge(items, per_write, settled)

    def _already_there(self, write: Write, settled: dict[int, Attempt]) -> bool:
        """Plain create of an item in doubt: search by identifier first (no duplicate)."""
        if write.mode != "create" or not write.in_doubt:
            return False
        try:
            found = self.search_identifier(write)
        except RetriableDeliveryError:
            return False
        if found:
            for item in write.items:
                settled[item.id] = OK
        return bool(found)

    def search_identifier(self, write: Write) -> list[dict[str, Any]]:
        self.pacer.wait(1)
        answer = self.request("GET", f"{self.base}{write.rtype}?{identifier_query(write.resource)}")
        if answer.status_code != 200:
            raise RetriableDeliveryError(f"search: HTTP {answer.status_code}")
        return [e.get("resource") or {} for e in answer.json().get("entry") or []]

    def send_bundle(self, writes: list[Write], stop: threading.Event | None = None
                    ) -> list[Attempt]:
        transaction = self.limits.bundle == "transaction"
        bundle = {"resourceType": "Bundle", "type": "transaction" if transaction else "batch",
                  "entry": [self.entry(w) for w in writes]}
        body = orjson.dumps(bundle)
        self.pacer.wait(len(writes), transaction=transaction, stop=stop)
        headers = {"Content-Type": FHIR_JSON, **self.extra_headers("POST", body, writes)}
        # ``POST [base]``: the base without its trailing slash (a server may redirect the
        # other form, and redirects are not followed for writes).
        answer, failed = self._exchange("POST", self.base.rstrip("/"), body, headers)
        if failed is not None:
            return [failed] * len(writes)
        assert answer is not None
        verdict = classify(answer.status_code)
        if verdict is Verdict.OK:
            return self.reconcile(writes, answer, transaction, stop)
        if verdict in (Verdict.FATAL, Verdict.TOO_LARGE, Verdict.CONFLICT) and len(writes) > 1:
            # A refused transaction applied nothing; a refused batch was not read. Halve it
            # until the offending entries stand alone (log2(n) extra requests at most per one).
            half = len(writes) // 2
            return self.send_bundle(writes[:half], stop) + self.send_bundle(writes[half:], stop)
        if verdict is Verdict.CONFLICT:
            return [self.send_single(writes[0], stop)]
        return [self.attempt_from(answer, verdict)] * len(writes)

    def _exchange(self, method: str, url: str, body: bytes | None, headers: dict[str, str]
                  ) -> tuple[httpx.Response | None, Attempt | None]:
        """Send with circuit and throttle bookkeeping: (answer, None) or (None, failure)."""
        try:
            answer = self.request(method, url, body=body, headers=headers)
        except RetriableDeliveryError as exc:
            self.breaker.record(False)
            return None, Attempt(Verdict.RETRY, exc.message, retry_after=exc.retry_after)
        if self.throttled(answer):
            wait = retry_after_secs(answer.headers.get("Retry-After"))
            self.pacer.on_throttled(wait)
            # Throttled is alive: the pacer slows down; the circuit (and a half-open probe)
            # must not stay undecided.
            self.breaker.record(True)
            return None, Attempt(Verdict.THROTTLED, f"throttled (HTTP {answer.status_code})",
                                 retry_after=wait)
        verdict = classify(answer.status_code)
        if verdict in (Verdict.RETRY, Verdict.AUTH):
            self.breaker.record(False)
            return None, self.attempt_from(answer, Verdict.RETRY)
        self.breaker.record(True)
        self.pacer.on_success()
        return answer, None

    def attempt_from(self, answer: httpx.Response, verdict: Verdict) -> Attempt:
        return Attempt(verdict, f"HTTP {answer.status_code}", detail=outcome_of(answer),
                       retry_after=retry_after_secs(answer.headers.get("Retry-After")))

    def reconcile(self, writes: list[Write], answer: httpx.Response, transaction: bool,
                  stop: threading.Event | None) -> list[Attempt]:
        """Per-entry outcomes of a 2xx Bundle answer (entries answer in request order)."""
        try:
            entries = answer.json().get("entry") or []
        except ValueError:
            entries = []
        if len(entries) != len(writes):
            if transaction:
                return [OK] * len(writes)  # all or nothing, and it was all
            return [Attempt(Verdict.RETRY, "batch-response does not match the request")] \
                * len(writes)
        out: list[Attempt] = []
        for write, entry in zip(writes, entries, strict=True):
            response = entry.get("response") or {}
            status = _status_code(response.get("status", ""))
            verdict = classify(status)
            if verdict is Verdict.OK:
                out.append(OK)
            elif verdict is Verdict.CONFLICT:
                out.append(self.send_single(write, stop))
            else:
                if verdict is Verdict.THROTTLED:
                    verdict = Verdict.RETRY
                elif verdict is Verdict.AUTH:
                    verdict = Verdict.FATAL  # this entry refused; the request itself passed
                out.append(Attempt(verdict, f"entry HTTP {status}",
                                   detail=response.get("outcome")))
        return out

    def send_single(self, write: Write, stop: threading.Event | None = None) -> Attempt:
        """One write as its own request; 409/412 → re-read and retry, at most twice."""
        etag: str | None = None
        target = write
        for conflict in range(MAX_CONFLICT_RETRIES + 1):
            method, url, headers, body = self._single_request(target, etag)
            self.pacer.wait(1, stop=stop)
            answer, failed = self._exchange(method, url, body, headers)
            if failed is not None:
                return failed
            assert answer is not None
            verdict = classify(answer.status_code)
            if verdict is not Verdict.CONFLICT:
                return OK if verdict is Verdict.OK else self.attempt_from(answer, verdict)
            if conflict == MAX_CONFLICT_RETRIES:
                break
            target, etag = self._reread(write)
            if target is None:
                return OK  # the identifier exists once: that is the resource we meant
        return Attempt(Verdict.FATAL, f"conflict persisted after {MAX_CONFLICT_RETRIES} re-reads")

    def _single_request(self, write: Write, etag: str | None
                        ) -> tuple[str, str, dict[str, str], bytes]:
        headers = {"Content-Type": FHIR_JSON}
        if etag:
            headers["If-Match"] = etag
        if write.mode == "put":
            body = orjson.dumps(write.resource)
            url = f"{self.base}{write.rtype}/{write.rid}"
            return "PUT", url, {**headers, **self.extra_headers("PUT", body, [write])}, body
        query = identifier_query(write.resource)
        body = orjson.dumps({k: v for k, v in write.resource.items() if k != "id"})
        if write.mode == "conditional":
            headers["If-None-Exist"] = query
        headers.update(self.extra_headers("POST", body, [write]))
        return "POST", f"{self.base}{write.rtype}", headers, body

    def _reread(self, write: Write) -> tuple[Any, str | None]:
        """After 409/412: the current ETag to PUT against, or (None, _) if nothing to redo."""
        if write.mode == "put":
            answer = self.request("GET", f"{self.base}{write.rtype}/{write.rid}")
            return write, answer.headers.get("ETag") if answer.status_code == 200 else None
        found = self.search_identifier(write)
        if len(found) == 1:
            return None, None
        return write, None

    # ------------------------------------------------------------ check and dry run

    def check(self) -> str:
        """A cheap real call: the CapabilityStatement, and what the hub would do with it."""
        started = time.monotonic()
        caps = self.capabilities()
        took = (time.monotonic() - started) * 1000
        modes = self.modes_from(caps)
        rest: dict[str, Any] = next(iter(caps.get("rest") or []), {})
        kinds = sorted({i.get("code") for i in rest.get("interaction") or []} & {"batch",
                                                                                 "transaction"})
        software = (caps.get("software") or {}).get("name", "?")
        shown = ", ".join(f"{t}={m}" for t, m in sorted(modes.items())) or "no writable types"
        return (f"{self.name}: reachable in {took:.0f} ms; FHIR {caps.get('fhirVersion', '?')} "
                f"({software}); bundles: {', '.join(kinds) or 'none'}; writes: {shown}")

    def preview(self, items: list[Claimed]) -> dict[str, Any]:
        """What ``deliver`` would send for ``items`` (dry run): the Bundle and the skips."""
        writes, settled = self.plan(items)
        kind = "transaction" if self.limits.bundle == "transaction" else "batch"
        return {"destination": self.name,
                "bundle": {"resourceType": "Bundle", "type": kind,
                           "entry": [self.entry(w) for w in writes]},
                "skipped": [{"outboxId": i, "reason": a.reason} for i, a in settled.items()
                            if a.skipped]}


def merge(items: list[Claimed], per_write: list[tuple[Write, Attempt]],
          settled: dict[int, Attempt]) -> dict[int, Attempt]:
    """An item's outcome is the worst of its writes': fatal > retry > ok."""
    rank = {Verdict.OK: 0, Verdict.RETRY: 1, Verdict.THROTTLED: 1, Verdict.AUTH: 1,
            Verdict.CONFLICT: 1, Verdict.FATAL: 2, Verdict.TOO_LARGE: 2}
    out = dict(settled)
    for write, attempt in per_write:
        for item in write.items:
            prior = out.get(item.id)
            if prior is None or rank[attempt.verdict] > rank[prior.verdict]:
                out[item.id] = attempt
    for item in items:
        out.setdefault(item.id, OK)
    return out


def idempotency_key(writes: list[Write]) -> str:
    """A key that is the same for the same writes (HealthLake dedupes POSTs on it)."""
    parts = sorted(f"{w.rtype}/{w.rid}@{max(i.version_id for i in w.items)}" for w in writes)
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "hub-sync:" + ",".join(parts)))
