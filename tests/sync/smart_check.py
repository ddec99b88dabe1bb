"""The loopback SMART token endpoint: verifies a client assertion the way the spec demands.

SMART Backend Services (App Launch 2.2): ``grant_type=client_credentials``,
``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer``, a JWT signed
RS384 or ES384 with a ``kid`` found in the client's JWKS, ``iss`` = ``sub`` = client id,
``aud`` = this token URL, ``exp`` at most five minutes ahead, a ``jti`` never seen before, and a
scope within what the client is allowed. Every request is recorded with its verdict.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _refuse(st: Any, record: dict[str, Any], error: str, why: str) -> JSONResponse:
    record.update(ok=False, error=error, why=why)
    st.token_requests.append(record)
    return JSONResponse({"error": error, "error_description": why}, 400 if error !=
                        "invalid_client" else 401)


def check_token_request(st: Any, request: Request, form: dict[str, Any]) -> JSONResponse:
    cfg = st.config["smart"]
    record: dict[str, Any] = {"at": time.time()}
    if form.get("grant_type") != "client_credentials":
        return _refuse(st, record, "unsupported_grant_type", "grant_type")
    if form.get("client_assertion_type") != ASSERTION_TYPE:
        return _refuse(st, record, "invalid_client", "client_assertion_type")
    assertion = str(form.get("client_assertion", ""))
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError:
        return _refuse(st, record, "invalid_client", "not a JWT")
    record.update(alg=header.get("alg"), kid=header.get("kid"))
    if header.get("alg") not in ("RS384", "ES384"):
        return _refuse(st, record, "invalid_client", "alg")
    jwk = next((k for k in cfg["jwks"]["keys"] if k.get("kid") == header.get("kid")), None)
    if jwk is None:
        return _refuse(st, record, "invalid_client", "unknown kid")
    try:
        claims = jwt.decode(assertion, jwt.PyJWK(jwk).key, algorithms=[header["alg"]],
                            audience=cfg["token_url"],
                            options={"require": ["iss", "sub", "aud", "exp", "jti"]})
    except jwt.PyJWTError as exc:
        return _refuse(st, record, "invalid_client", f"signature or claims: {exc}")
    now = time.time()
    record.update(iss=claims["iss"], sub=claims["sub"], jti=claims["jti"],
                  exp_ahead=claims["exp"] - now, scope=form.get("scope"))
    if claims["iss"] != cfg["client_id"] or claims["sub"] != cfg["client_id"]:
        return _refuse(st, record, "invalid_client", "iss/sub")
    if claims["exp"] > now + 300 + 5:
        return _refuse(st, record, "invalid_client", "exp more than 5 minutes ahead")
    if claims["jti"] in st.jtis:
        return _refuse(st, record, "invalid_client", "jti replayed")
    st.jtis.add(claims["jti"])
    requested = set(str(form.get("scope", "")).split())
    if not requested or not requested <= set(cfg["allowed_scopes"]):
        return _refuse(st, record, "invalid_scope", "scope")
    token = uuid.uuid4().hex
    ttl = int(st.config["token_ttl"])
    st.tokens[token] = now + ttl
    record.update(ok=True)
    st.token_requests.append(record)
    return JSONResponse({"access_token": token, "token_type": "bearer", "expires_in": ttl,
                         "scope": " ".join(sorted(requested))})
