"""The hub's signing keys for SMART Backend Services, and the JWKS that publishes them.

A key is one PEM file ``<kid>.pem`` in the keys directory (``HUB_KEYS_DIR``), written ``0600``;
``kid`` is the RFC 7638 thumbprint of its public key. Every key in the directory is published at
``/.well-known/jwks.json`` (Epic requires a JWKS URL since 2024), so rotation is: generate a new
key, point the destination at it, delete the old file once no EHR uses it. RSA keys are 2048
bits, the minimum Epic accepts; EC keys are P-384 (ES384).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from hub.errors import ConfigurationError

Alg = Literal["RS384", "ES384"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: Alg
    private_key: PrivateKey

    def public_jwk(self) -> dict[str, Any]:
        return public_jwk(self.private_key, self.kid, self.alg)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(key: PrivateKey, kid: str | None = None, alg: Alg | None = None
               ) -> dict[str, Any]:
    """The public half as a JWK (with ``kid``, ``alg``, ``use: sig``)."""
    if isinstance(key, rsa.RSAPrivateKey):
        jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
        alg = alg or "RS384"
    else:
        jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
        alg = alg or "ES384"
    jwk.update(kid=kid or thumbprint(jwk), alg=alg, use="sig")
    jwk.pop("key_ops", None)
    return jwk


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638: SHA-256 over the required members in lexicographic order, base64url."""
    required = ("e", "kty", "n") if jwk["kty"] == "RSA" else ("crv", "kty", "x", "y")
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"),
                           sort_keys=True)
    return _b64(hashlib.sha256(canonical.encode()).digest())


def generate(alg: Alg) -> PrivateKey:
    if alg == "RS384":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP384R1())


def write_new_key(keys_dir: Path, alg: Alg) -> SigningKey:
    """Generate a key pair and store the private key as ``<kid>.pem`` (mode 0600)."""
    key = generate(alg)
    kid = thumbprint(public_jwk(key, "x", alg))
    keys_dir.mkdir(parents=True, exist_ok=True)
    path = keys_dir / f"{kid}.pem"
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return SigningKey(kid, alg, key)


def load_key(path: Path, kid: str | None = None) -> SigningKey:
    """Read a PEM private key; ``kid`` defaults to its thumbprint."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigurationError(f"signing key {path}: cannot read ({exc.strerror})") from None
    except ValueError:
        raise ConfigurationError(f"signing key {path}: not an unencrypted PEM private key"
                                 ) from None
    if isinstance(key, rsa.RSAPrivateKey):
        alg: Alg = "RS384"
    elif isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1":
        alg = "ES384"
    else:
        raise ConfigurationError(f"signing key {path}: must be RSA (RS384) or P-384 (ES384)")
    return SigningKey(kid or thumbprint(public_jwk(key, "x", alg)), alg, key)


def jwks(keys_dir: Path) -> dict[str, Any]:
    """The public JWK Set of every ``*.pem`` key in ``keys_dir`` (empty if none)."""
    keys = []
    if keys_dir.is_dir():
        for path in sorted(keys_dir.glob("*.pem")):
            try:
                keys.append(load_key(path).public_jwk())
            except ConfigurationError:
                continue  # a stray file must not take the JWKS down for the other keys
    return {"keys": keys}
