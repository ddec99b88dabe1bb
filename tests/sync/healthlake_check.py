"""The loopback HealthLake checks: SigV4 verified with botocore, the tier's limits enforced.

``check_request`` recomputes the signature from the request as received (method, URL, the
headers named in SignedHeaders, the body, X-Amz-Date) with botocore's SigV4Auth and the test
credentials; refuses Bundles over the tier's entry limit; throttles above the tier's rate with
``ThrottlingException`` (a transaction costs twice a batch); and answers a repeated
``x-amz-fhir-idempotency-key`` with 409.
"""

from __future__ import annotations

import hmac
import time
from datetime import UTC, datetime
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from starlette.requests import Request
from starlette.responses import Response

from tests.sync.fhir_server import _outcome


def verify_sigv4(cfg: dict[str, Any], request: Request, body: bytes) -> str | None:
    """None if the signature is right, else why not."""
    auth = request.headers.get("authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return "no SigV4 Authorization"
    fields = dict(part.strip().split("=", 1) for part in auth[len("AWS4-HMAC-SHA256 "):]
                  .split(","))
    key, date, region, service, terminal = fields["Credential"].split("/")
    stamp = request.headers.get("x-amz-date", "")
    if key != cfg["access_key"] or region != cfg["region"] or service != "healthlake" \
            or terminal != "aws4_request" or not stamp.startswith(date):
        return "credential scope"
    when = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    if abs((datetime.now(UTC) - when).total_seconds()) > 300:
        return "stale X-Amz-Date"
    signed = fields["SignedHeaders"].split(";")
    aws = AWSRequest(method=request.method, url=str(request.url), data=body,
                     headers={h: request.headers[h] for h in signed})
    aws.context["timestamp"] = stamp
    signer = SigV4Auth(Credentials(cfg["access_key"], cfg["secret_key"]), "healthlake",
                       cfg["region"])
    expected = signer.signature(signer.string_to_sign(aws, signer.canonical_request(aws)), aws)
    return None if hmac.compare_digest(expected, fields["Signature"]) else "signature mismatch"


def check_request(st: Any, cfg: dict[str, Any], request: Request, body: bytes, entries: int,
                  transaction: bool) -> Response | None:
    why = verify_sigv4(cfg, request, body)
    if why is not None:
        st.counters["sigv4_refused"] += 1
        return _outcome(403, "security", f"InvalidSignatureException: {why}")
    st.counters["sigv4_ok"] += 1
    if entries > cfg["max_entries"]:
        st.counters["too_many_entries"] += 1
        return _outcome(400, "too-costly",
                        f"Bundle has {entries} entries; max {cfg['max_entries']}")
    cost = float(entries * (2 if transaction else 1)) if cfg["unit"] == "entries" else 1.0
    rate = float(cfg["rate"])
    tokens, stamp = st.bucket
    now = time.monotonic()
    tokens = rate if tokens < 0 and stamp == 0 else min(rate, tokens + (now - stamp) * rate)
    if tokens < cost and not (cost > rate and tokens >= rate):
        st.bucket[:] = [tokens, now]
        st.counters["throttled"] += 1
        return Response(b'{"__type":"ThrottlingException","message":"Rate exceeded"}',
                        int(cfg.get("throttle_status", 429)),
                        headers={"x-amzn-ErrorType": "ThrottlingException",
                                 "Retry-After": "1"})
    st.bucket[:] = [tokens - cost, now]
    key = request.headers.get("x-amz-fhir-idempotency-key")
    if request.method == "POST" and key:
        if key in st.idempotency:
            st.counters["idempotent_replays"] += 1
            return _outcome(409, "duplicate", "idempotency key already used")
        st.idempotency.add(key)
    st.counters["units"] += int(cost)
    st.counters.setdefault("first_cost", int(cost))
    st.counters.setdefault("first_at_ms", int(now * 1000))
    st.counters["last_at_ms"] = int(now * 1000)
    return None
