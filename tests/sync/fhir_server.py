"""A small loopback FHIR R4 server for sync tests and benchmarks (real HTTP, uvicorn).

It implements what a sync target must: PUT-as-create (``updateCreate``), conditional create
(``If-None-Exist`` / ``ifNoneExist``, atomic here), plain create, read with ETag, search by
identifier, batch and transaction Bundles (a transaction with one bad entry applies nothing), and
declares it all in ``/metadata``. It counts what a test must check: resources per identifier
(duplicates), write operations, and per patient the order in which Observations arrived.

Optional behaviour, set through ``POST /_admin/config``:

* faults: a share of requests answered 429 with Retry-After, or 503 (at exact rates, by request
  count); slow answers; per-entry
  500s inside batch answers; an outage window; entries with ``status = "entered-in-error"``
  refused with 422 (a poison entry);
* SMART: a token endpoint at ``/token`` that verifies the client assertion (pyjwt, public key by
  kid) and every claim rule, and FHIR calls then need its bearer token;
* HealthLake: ``/datastore/{id}/r4/...`` paths, a SigV4 signature verified with botocore against
  test credentials, the tier's entries-per-Bundle limit (400) and rate (429
  ThrottlingException, a transaction costing twice), ``x-amz-fhir-idempotency-key`` (409).

Run alone: ``python -m tests.sync.fhir_server --port 8123``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import threading
import time
import uuid
from collections import defaultdict
from typing import Any
from urllib.parse import parse_qs, unquote

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

URI = "urn:ietf:rfc:3986"
TYPES = ("Observation", "Patient", "Device", "Flag", "Communication")


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers=headers,
                    media_type="application/fhir+json")


def _outcome(status: int, code: str, text: str, headers: dict[str, str] | None = None
             ) -> Response:
    return _json({"resourceType": "OperationOutcome",
                  "issue": [{"severity": "error", "code": code, "diagnostics": text}]},
                 status, headers)


class State:
    """Everything the server holds; handlers run on one event loop, so no locking is needed."""

    def __init__(self) -> None:
        self.config: dict[str, Any] = {
            "update_create": True, "conditional_create": True, "p429": 0.0, "p503": 0.0,
            "retry_after": 1, "slow_ms": 0, "entry_p500": 0.0, "outage_until": 0.0,
            "smart": None, "healthlake": None, "token_ttl": 300, "seed": None,
        }
        self.reset()

    def reset(self) -> None:
        self.resources: dict[tuple[str, str], dict[str, Any]] = {}
        self.versions: dict[tuple[str, str], int] = {}
        self.by_identifier: dict[str, set[tuple[str, str]]] = defaultdict(set)
        self.writes: dict[str, int] = defaultdict(int)
        self.arrivals: dict[str, list[str]] = defaultdict(list)
        self.counters: dict[str, int] = defaultdict(int)
        self.jtis: set[str] = set()
        self.tokens: dict[str, float] = {}
        self.idempotency: set[str] = set()
        self.bucket: list[float] = [-1.0, 0.0]  # HealthLake quota bucket, filled on first use
        self.token_requests: list[dict[str, Any]] = []
        self.throttled_at = 0.0
        self.throttled_until = 0.0
        self.early: list[Any] = []

    # ------------------------------------------------------------ storage

    def identifier(self, res: dict[str, Any]) -> str | None:
        for ident in res.get("identifier") or []:
            if ident.get("system") == URI:
                return str(ident.get("value"))
        return None

    def apply(self, rtype: str, rid: str, res: dict[str, Any]) -> int:
        key = (rtype, rid)
        res = {**res, "id": rid}
        created = key not in self.resources
        self.versions[key] = self.versions.get(key, 0) + 1
        self.resources[key] = res
        ident = self.identifier(res)
        if ident:
            self.by_identifier[ident].add(key)
            self.writes[ident] += 1
        if rtype == "Observation":
            patient = str((res.get("subject") or {}).get("reference", ""))
            self.arrivals[patient].append(ident or rid)
        self.counters["created" if created else "updated"] += 1
        return 201 if created else 200

    def matches(self, rtype: str, query: str) -> list[tuple[str, str]]:
        params = parse_qs(query)
        value = (params.get("identifier") or [""])[0]
        _, _, ident = unquote(value).partition("|")
        return sorted(k for k in self.by_identifier.get(ident, ()) if k[0] == rtype)

    def write(self, method: str, rtype: str, rid: str | None, res: dict[str, Any],
              if_none_exist: str | None) -> tuple[int, dict[str, Any] | None, str | None]:
        """One write; returns (status, outcome, location)."""
        if rtype not in TYPES:
            return 404, None, None
        if res.get("resourceType") != rtype:
            return 400, {"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "invalid", "diagnostics": "type mismatch"}]}, None
        if res.get("status") == "entered-in-error":
            return 422, {"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "business-rule",
                 "diagnostics": "status entered-in-error refused"}]}, None
        if method == "PUT":
            assert rid is not None
            if (rtype, rid) not in self.resources and not self.config["update_create"]:
                return 405, None, None
            status = self.apply(rtype, rid, res)
            return status, None, f"{rtype}/{rid}/_history/{self.versions[(rtype, rid)]}"
        if if_none_exist is not None:
            if not self.config["conditional_create"]:
                return 400, None, None
            found = self.matches(rtype, if_none_exist)
            if len(found) > 1:
                return 412, None, None
            if found:
                self.counters["conditional_hit"] += 1
                return 200, None, f"{rtype}/{found[0][1]}"
        new_id = str(uuid.uuid4())
        self.apply(rtype, new_id, res)
        return 201, None, f"{rtype}/{new_id}/_history/1"

    # ------------------------------------------------------------ stats

    def stats(self) -> dict[str, Any]:
        dupes = {k: len(v) for k, v in self.by_identifier.items() if len(v) > 1}
        return {"resources": len(self.resources), "identifiers": len(self.by_identifier),
                "duplicates": dupes, "counters": dict(self.counters),
                "writes": dict(self.writes), "arrivals": dict(self.arrivals),
                "tokens_issued": len(self.tokens), "token_requests": self.token_requests,
                "early": self.early}


def capability(state: State) -> dict[str, Any]:
    interactions = [{"code": c} for c in ("read", "create", "update", "search-type")]
    return {
        "resourceType": "CapabilityStatement", "status": "active", "kind": "instance",
        "fhirVersion": "4.0.1", "format": ["json"], "software": {"name": "loopback-test-fhir"},
        "rest": [{"mode": "server",
                  "interaction": [{"code": "batch"}, {"code": "transaction"}],
                  "resource": [{"type": t, "interaction": interactions,
                                "updateCreate": state.config["update_create"],
                                "conditionalCreate": state.config["conditional_create"]}
                               for t in TYPES]}],
    }


def build_app(state: State | None = None) -> Starlette:
    st = state or State()
    rng = random.Random(st.config.get("seed"))

    async def gate(request: Request, entries: int = 1, transaction: bool = False
                   ) -> Response | None:
        """Faults, auth and quotas before a FHIR interaction; None lets it through."""
        cfg = st.config
        st.counters["requests"] += 1
        # This request's number, taken before any await: read after the slow_ms sleep below,
        # concurrent requests shared numbers and skipped others, so a run could miss every
        # "n % 20 == 3" and meet no 503 at all (a CI failure on the fault test).
        n = st.counters["requests"]
        if time.monotonic() < cfg["outage_until"]:
            st.counters["outage"] += 1
            return _outcome(503, "transient", "outage")
        arrived = time.monotonic()
        # A request that started well after a 429 answer but before its Retry-After ran out
        # means the hub did not honour it (requests already on their way get 150 ms of grace).
        if st.throttled_at + 0.15 < arrived < st.throttled_until - 0.05:
            st.counters["early_after_429"] += 1
            st.early.append((round(arrived - st.throttled_at, 3), str(request.url.path),
                             request.headers.get("x-lane", "")))
        if cfg["slow_ms"]:
            await asyncio.sleep(rng.random() * cfg["slow_ms"] / 1000)
        now = time.monotonic()
        # Faults at exact rates (every 5th request 429 for 20 %, every 20th 503 for 5 %), so
        # every run meets each kind whatever the timing.
        if cfg["p429"] and n % round(1 / cfg["p429"]) == 1:
            st.counters["faults_429"] += 1
            st.throttled_at = now
            st.throttled_until = max(st.throttled_until, now + float(cfg["retry_after"]))
            return _outcome(429, "throttled", "slow down",
                            {"Retry-After": str(cfg["retry_after"])})
        if cfg["p503"] and n % round(1 / cfg["p503"]) == 3:
            st.counters["faults_503"] += 1
            return _outcome(503, "transient", "unavailable")
        if cfg["smart"]:
            token = request.headers.get("authorization", "").removeprefix("Bearer ")
            if st.tokens.get(token, 0) < time.time():
                st.counters["unauthorized"] += 1
                return _outcome(401, "login", "token invalid or expired")
        if cfg["healthlake"]:
            from tests.sync.healthlake_check import check_request

            refused = check_request(st, cfg["healthlake"], request, await request.body(),
                                    entries, transaction)
            if refused is not None:
                return refused
        return None

    async def metadata(request: Request) -> Response:
        if time.monotonic() < st.config["outage_until"]:
            return _outcome(503, "transient", "outage")
        return _json(capability(st))

    async def read_or_search(request: Request) -> Response:
        refused = await gate(request)
        if refused:
            return refused
        rtype = request.path_params["rtype"]
        rid = request.path_params.get("rid")
        if rid is not None:
            res = st.resources.get((rtype, rid))
            if res is None:
                return _outcome(404, "not-found", "no such resource")
            version = st.versions[(rtype, rid)]
            return _json(res, headers={"ETag": f'W/"{version}"'})
        found = st.matches(rtype, request.url.query)
        return _json({"resourceType": "Bundle", "type": "searchset", "total": len(found),
                      "entry": [{"resource": st.resources[k]} for k in found]})

    async def put(request: Request) -> Response:
        refused = await gate(request)
        if refused:
            return refused
        res = orjson.loads(await request.body())
        status, outcome, location = st.write("PUT", request.path_params["rtype"],
                                             request.path_params["rid"], res, None)
        return _single(status, outcome, location)

    async def create(request: Request) -> Response:
        body = await request.body()
        refused = await gate(request)
        if refused:
            return refused
        status, outcome, location = st.write(
            "POST", request.path_params["rtype"], None, orjson.loads(body),
            request.headers.get("if-none-exist"))
        return _single(status, outcome, location)

    def _single(status: int, outcome: dict[str, Any] | None, location: str | None
                ) -> Response:
        if outcome is not None or status >= 400:
            return _json(outcome or {"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "processing", "diagnostics": "refused"}]}, status)
        return Response(b"", status, headers={"Location": location or ""})

    async def bundle(request: Request) -> Response:
        body = await request.body()
        bundle = orjson.loads(body)
        entries = bundle.get("entry") or []
        transaction = bundle.get("type") == "transaction"
        refused = await gate(request, len(entries), transaction)
        if refused:
            return refused
        if transaction:
            return _transaction(entries)
        out = []
        for entry in entries:
            st.counters["entries"] += 1  # exact rate, as the request faults above
            if st.config["entry_p500"] and \
                    st.counters["entries"] % round(1 / st.config["entry_p500"]) == 7:
                st.counters["entry_faults"] += 1
                out.append({"response": {"status": "500 Internal Server Error"}})
                continue
            out.append({"response": _entry_write(entry)})
        return _json({"resourceType": "Bundle", "type": "batch-response", "entry": out})

    def _entry_write(entry: dict[str, Any]) -> dict[str, Any]:
        req = entry.get("request") or {}
        method = req.get("method")
        url = str(req.get("url", ""))
        rtype, _, rid = url.partition("/")
        status, outcome, location = st.write(str(method), rtype, rid or None, entry["resource"],
                                             req.get("ifNoneExist"))
        answer: dict[str, Any] = {"status": str(status)}
        if location:
            answer["location"] = location
        if outcome:
            answer["outcome"] = outcome
        return answer

    def _transaction(entries: list[dict[str, Any]]) -> Response:
        for i, entry in enumerate(entries):
            if (entry.get("resource") or {}).get("status") == "entered-in-error":
                st.counters["transactions_refused"] += 1
                return _outcome(400, "business-rule", f"entry[{i}] refused")
        return _json({"resourceType": "Bundle", "type": "transaction-response",
                      "entry": [{"response": _entry_write(e)} for e in entries]})

    async def token(request: Request) -> Response:
        from tests.sync.smart_check import check_token_request

        return check_token_request(st, request, dict(await request.form()))

    async def admin_config(request: Request) -> Response:
        update = orjson.loads(await request.body())
        if "outage_secs" in update:
            update["outage_until"] = time.monotonic() + float(update.pop("outage_secs"))
        st.config.update(update)
        return _json(st.config)

    async def admin_stats(request: Request) -> Response:
        return _json(st.stats())

    async def admin_reset(request: Request) -> Response:
        st.reset()
        return _json({})

    fhir = [
        Route("/metadata", metadata, methods=["GET"]),
        Route("/", bundle, methods=["POST"]),
        Route("/{rtype}", create, methods=["POST"]),
        Route("/{rtype}", read_or_search, methods=["GET"]),
        Route("/{rtype}/{rid}", read_or_search, methods=["GET"]),
        Route("/{rtype}/{rid}", put, methods=["PUT"]),
    ]
    routes = [Route("/token", token, methods=["POST"]),
              Route("/_admin/config", admin_config, methods=["POST"]),
              Route("/_admin/stats", admin_stats, methods=["GET"]),
              Route("/_admin/reset", admin_reset, methods=["POST"])]
    for prefix in ("/fhir", "/datastore/{store}/r4"):
        routes += [Route(prefix + r.path, r.endpoint, methods=list(r.methods or []))
                   for r in fhir]
        routes.append(Route(prefix, bundle, methods=["POST"]))  # POST [base], no slash
    app = Starlette(routes=routes)
    app.state.fhir = st
    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """The app under uvicorn in a background thread (real sockets), for in-process tests."""

    def __init__(self, state: State | None = None, port: int | None = None) -> None:
        self.state = state or State()
        self.port = port or free_port()
        config = uvicorn.Config(build_app(self.state), host="127.0.0.1", port=self.port,
                                log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("test FHIR server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(build_app(), host="127.0.0.1", port=args.port, log_level="warning",
                access_log=False, lifespan="off")


if __name__ == "__main__":
    main()

