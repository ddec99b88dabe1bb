"""How the hub authenticates to a destination: none, bearer, basic, SMART Backend Services, SigV4.

Every scheme is a :class:`RequestAuth`: ``apply`` decorates a fully built request (SigV4 signs
the exact bytes and headers that go out), ``reauthenticate`` is called once after a 401 and says
whether retrying makes sense.

SMART Backend Services (hl7.org/fhir/smart-app-launch/backend-services.html): a
``client_credentials`` grant with a ``private_key_jwt`` client assertion (RFC 7523) signed RS384
or ES384, ``iss`` = ``sub`` = client id, ``aud`` = the token URL, a fresh ``jti``, ``exp`` four
minutes ahead (the spec allows at most five), ``kid`` in the header. The access token is cached
until ``expires_in`` minus a skew, shared by all lanes, and fetched again once after a 401.
"""

from __future__ import annotations

import base64
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Protocol

import httpx
import jwt
from botocore.auth import SigV4Auth as BotoSigV4
from botocore.awsrequest import AWSRequest
from botocore.session import Session as BotoSession

from hub.errors import ConfigurationError, RetriableDeliveryError
from hub.sync import config as cfg
from hub.sync.keys import SigningKey, load_key

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME_SECS = 240  # SMART: "no more than five minutes in the future"


class RequestAuth(Protocol):
    def apply(self, request: httpx.Request) -> None: ...

    def reauthenticate(self) -> bool: ...


class NoAuth:
    def apply(self, request: httpx.Request) -> None:
        return None

    def reauthenticate(self) -> bool:
        return False


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ConfigurationError(f"environment variable {name} is not set")
    return value


class StaticAuth:
    """A fixed Authorization header (bearer token or HTTP Basic) read from the environment."""

    def __init__(self, header: str) -> None:
        self._header = header

    @classmethod
    def bearer(cls, spec: cfg.BearerAuth) -> StaticAuth:
        return cls(f"Bearer {_env(spec.token_env)}")

    @classmethod
    def basic(cls, spec: cfg.BasicAuth) -> StaticAuth:
        raw = f"{_env(spec.username_env)}:{_env(spec.password_env)}".encode()
        return cls("Basic " + base64.b64encode(raw).decode())

    def apply(self, request: httpx.Request) -> None:
        request.headers["Authorization"] = self._header

    def reauthenticate(self) -> bool:
        return False


class SmartBackendAuth:
    """SMART Backend Services token client (see module docstring). Thread-safe."""

    def __init__(self, spec: cfg.SmartAuth, http: httpx.Client, *,
                 key: SigningKey | None = None, clock: Callable[[], float] = time.time) -> None:
        self.client_id = spec.client_id
        self.token_url = str(spec.token_url)
        self.scopes = " ".join(spec.scopes)
        self.skew = spec.skew_secs
        loaded = key or load_key(spec.private_key_file, spec.kid)
        self.key = SigningKey(spec.kid or loaded.kid, spec.alg, loaded.private_key)
        self._http = http
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires = 0.0
        self.fetched = 0  # tokens obtained, for tests and status

    def assertion(self) -> str:
        now = int(self._clock())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": self.token_url,
                  "jti": str(uuid.uuid4()), "iat": now, "exp": now + ASSERTION_LIFETIME_SECS}
        return jwt.encode(claims, self.key.private_key, algorithm=self.key.alg,
                          headers={"kid": self.key.kid, "typ": "JWT"})

    def token(self) -> str:
        with self._lock:
            if self._token is not None and self._clock() < self._expires - self.skew:
                return self._token
            form = {"grant_type": "client_credentials", "scope": self.scopes,
                    "client_assertion_type": ASSERTION_TYPE,
                    "client_assertion": self.assertion()}
            try:
                answer = self._http.post(self.token_url, data=form,
                                         headers={"Accept": "application/json"})
            except httpx.TransportError as exc:
                raise RetriableDeliveryError(
                    f"token endpoint unreachable ({type(exc).__name__})") from None
            if answer.status_code != 200:
                # The OAuth error code is safe to show (invalid_client, invalid_scope...).
                code = _oauth_error(answer)
                raise RetriableDeliveryError(
                    f"token request refused: HTTP {answer.status_code} {code}".rstrip(),
                    retry_after=30.0)
            body = answer.json()
            self._token = str(body["access_token"])
            self._expires = self._clock() + float(body.get("expires_in", 300))
            self.fetched += 1
            return self._token

    def apply(self, request: httpx.Request) -> None:
        request.headers["Authorization"] = f"Bearer {self.token()}"

    def reauthenticate(self) -> bool:
        with self._lock:
            self._token = None
        return True


def _oauth_error(answer: httpx.Response) -> str:
    try:
        value = answer.json().get("error", "")
    except ValueError:
        return ""
    return value if isinstance(value, str) and value.replace("_", "").isalnum() else ""


class SigV4RequestAuth:
    """AWS SigV4 with botocore's signer (service ``healthlake``) and its credential chain."""

    SERVICE = "healthlake"

    def __init__(self, region: str, profile: str | None = None,
                 session: BotoSession | None = None) -> None:
        self.region = region
        boto = session or BotoSession(profile=profile)
        credentials = boto.get_credentials()
        if credentials is None:
            raise ConfigurationError(
                "no AWS credentials found (environment, shared profile or instance role)")
        self._credentials = credentials

    def apply(self, request: httpx.Request) -> None:
        body = request.content
        headers = {"host": request.url.netloc.decode(),
                   **{k: v for k, v in request.headers.items()
                      if k.lower() == "content-type" or k.lower().startswith("x-amz-")}}
        aws = AWSRequest(method=request.method, url=str(request.url), data=body,
                         headers=headers)
        BotoSigV4(self._credentials.get_frozen_credentials(), self.SERVICE,
                  self.region).add_auth(aws)
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            if name in aws.headers:
                request.headers[name] = aws.headers[name]

    def reauthenticate(self) -> bool:
        return False  # botocore refreshes temporary credentials by itself


def build_auth(spec: cfg.NoAuth | cfg.BearerAuth | cfg.BasicAuth | cfg.SmartAuth | cfg.SigV4Auth,
               http: httpx.Client, *, region: str | None = None) -> RequestAuth:
    """The :class:`RequestAuth` for a destination's ``auth`` block."""
    if isinstance(spec, cfg.BearerAuth):
        return StaticAuth.bearer(spec)
    if isinstance(spec, cfg.BasicAuth):
        return StaticAuth.basic(spec)
    if isinstance(spec, cfg.SmartAuth):
        return SmartBackendAuth(spec, http)
    if isinstance(spec, cfg.SigV4Auth):
        chosen = spec.region or region
        if not chosen:
            raise ConfigurationError("sigv4 auth needs a region")
        return SigV4RequestAuth(chosen, spec.profile)
    return NoAuth()
