"""Credentials for the emulated tenancy and OCI request-signature verification.

The emulator generates one API key per data directory and writes an ordinary OCI config
file, so the real SDK and CLI sign requests exactly as they do against OCI; the emulator
checks those signatures (draft-cavage HTTP signatures, rsa-sha256) with the public key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from . import ids
from .errors import not_authenticated
from .routing import Request

CLOCK_SKEW_SECONDS = 300
_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Identity:
    tenancy: str
    user: str
    fingerprint: str
    region: str

    @property
    def key_id(self) -> str:
        return f"{self.tenancy}/{self.user}/{self.fingerprint}"


def fingerprint_of(public_key: rsa.RSAPublicKey) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashlib.md5(der).hexdigest()  # noqa: S324 - OCI key fingerprints are MD5 by definition
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def generate_key_file(path: Path) -> rsa.RSAPrivateKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_bytes(pem)
    path.chmod(0o600)
    return key


class Credentials:
    """The tenancy identity, its API key, and the config file clients read."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.key_path = data_dir / "oci_api_key.pem"
        self.identity_path = data_dir / "identity.json"
        self.config_path = data_dir / "oci_config"
        if self.key_path.exists() and self.identity_path.exists():
            key = serialization.load_pem_private_key(self.key_path.read_bytes(), None)
            assert isinstance(key, rsa.RSAPrivateKey)
            self.identity = Identity(**json.loads(self.identity_path.read_text()))
        else:
            key = generate_key_file(self.key_path)
            self.identity = Identity(
                tenancy=ids.ocid("tenancy", region=""),
                user=ids.ocid("user", region=""),
                fingerprint=fingerprint_of(key.public_key()),
                region=ids.REGION,
            )
            self.identity_path.write_text(json.dumps(self.identity.__dict__, indent=2))
        self.public_key = key.public_key()
        self.write_config()

    def write_config(self) -> None:
        i = self.identity
        self.config_path.write_text(
            f"[DEFAULT]\nuser={i.user}\nfingerprint={i.fingerprint}\nkey_file={self.key_path}\ntenancy={i.tenancy}\nregion={i.region}\n"
        )
        self.config_path.chmod(0o600)

    def verify(self, request: Request) -> None:
        """Raise 401 NotAuthenticated unless the request carries a valid signature by our key."""
        header = request.header("authorization")
        if not header or not header.startswith("Signature "):
            raise not_authenticated("missing Signature authorization header")
        params = dict(_PARAM.findall(header))
        for name in ("headers", "keyId", "signature", "algorithm"):
            if name not in params:
                raise not_authenticated(f"signature has no {name}")
        if params["algorithm"] != "rsa-sha256":
            raise not_authenticated(f"unsupported algorithm {params['algorithm']}")
        if params["keyId"] != self.identity.key_id:
            raise not_authenticated("unknown keyId")
        signed = params["headers"].lower().split()
        for required in ("date", "(request-target)", "host"):
            if required not in signed and not (required == "date" and "x-date" in signed):
                raise not_authenticated(f"header {required} must be signed")
        lines = []
        for name in signed:
            if name == "(request-target)":
                lines.append(f"(request-target): {request.method.lower()} {request.raw_path}")
                continue
            value = request.header(name)
            if value is None:
                raise not_authenticated(f"signed header {name} is missing")
            lines.append(f"{name}: {value}")
        try:
            signature = base64.b64decode(params["signature"])
            self.public_key.verify(signature, "\n".join(lines).encode(), padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            raise not_authenticated("signature does not verify") from None
        self._check_date(request.header("x-date") or request.header("date") or "")
        if "x-content-sha256" in signed:
            expected = base64.b64encode(hashlib.sha256(request.body).digest()).decode()
            if request.header("x-content-sha256") != expected:
                raise not_authenticated("x-content-sha256 does not match the body")

    @staticmethod
    def _check_date(value: str) -> None:
        try:
            sent = parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            raise not_authenticated("date header is not an HTTP date") from None
        if abs(time.time() - sent) > CLOCK_SKEW_SECONDS:
            raise not_authenticated("date header is more than 5 minutes off")
