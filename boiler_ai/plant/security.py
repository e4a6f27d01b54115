"""Client-side OPC UA security settings and the files behind them (certificate, key, pinned server
certificate, password file).

No OPC UA library here: the settings are checked and the files loaded with `cryptography` alone, so
`boiler-ai check` can report a wrong certificate without opening a socket. The field names match the
daemon config's `opcua.security` section (boiler_ai.config loads them into SecuritySettings).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

POLICIES = ("None", "Basic256Sha256")
MODES = ("Sign", "SignAndEncrypt")


class SecurityError(ValueError):
    """A security setting or one of its files is wrong; the message names the setting or the file."""


@dataclass(frozen=True)
class SecuritySettings:
    """How the daemon authenticates to the DCS's OPC UA server and how it trusts the server.

    policy "None" is for the local simulator only. With "Basic256Sha256" the client certificate and
    key, the server certificate to pin and the application URI written in the client certificate are
    all required: a server presenting any other certificate is refused. The password lives in its own
    file (mode 0600, outside the config) and is read at each connect, so it can be rotated.
    """

    policy: str = "None"
    mode: str = "None"  # "Sign" | "SignAndEncrypt" with Basic256Sha256; "None" with policy None
    certificate: Path | None = None
    private_key: Path | None = None
    server_certificate: Path | None = None
    application_uri: str | None = None
    username: str | None = None
    password_file: Path | None = None

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise SecurityError(f"security policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if (self.username is None) != (self.password_file is None):
            raise SecurityError("security: username and password_file go together")
        if self.policy == "None":
            if self.mode != "None":
                raise SecurityError(f"security mode must be 'None' with policy None, got {self.mode!r}")
            if self.username is not None:
                # The password would cross the wire in clear text.
                raise SecurityError("security: username/password need policy Basic256Sha256, not None")
            return
        if self.mode not in MODES:
            raise SecurityError(f"security mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        for name in ("certificate", "private_key", "server_certificate", "application_uri"):
            if getattr(self, name) is None:
                raise SecurityError(f"security: {name} is required with policy {self.policy}")

    @property
    def secured(self) -> bool:
        return self.policy != "None"


@dataclass(frozen=True)
class ClientCredentials:
    """What a secured connect needs, loaded and cross-checked: DER certificates, DER (PKCS#8) key."""

    certificate_der: bytes
    private_key_der: bytes
    server_certificate_der: bytes  # the pinned one
    application_uri: str
    username: str | None
    password: str | None


def thumbprint(der: bytes) -> str:
    """SHA-1 thumbprint as OPC UA tools (and the server's certificate dialog) show it."""
    return hashlib.sha1(der).hexdigest().upper()


def _load_pem_or_der(path: Path, what: str, kind: str, load_pem, load_der):
    """Read `path` and parse it as PEM (by its header) or DER; errors name the setting and the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SecurityError(f"{what} {path}: cannot read ({exc.strerror or exc})") from exc
    try:
        return (load_pem if data.lstrip().startswith(b"-----BEGIN") else load_der)(data)
    except (ValueError, TypeError) as exc:
        raise SecurityError(f"{what} {path}: not {kind} ({exc})") from exc


def load_certificate(path: Path, what: str) -> x509.Certificate:
    """A DER or PEM certificate; `what` names the setting in the error."""
    return _load_pem_or_der(path, what, "a DER or PEM X.509 certificate",
                            x509.load_pem_x509_certificate, x509.load_der_x509_certificate)


def _load_private_key(path: Path):
    return _load_pem_or_der(path, "private_key", "an unencrypted DER or PEM private key",
                            lambda d: serialization.load_pem_private_key(d, password=None),
                            lambda d: serialization.load_der_private_key(d, password=None))


def certificate_uris(cert: x509.Certificate) -> list[str]:
    """The URIs in a certificate's subjectAltName (an OPC UA application URI among them)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return san.value.get_values_for_type(x509.UniformResourceIdentifier)


def _check_validity(cert: x509.Certificate, what: str, path: Path) -> None:
    now = datetime.now(UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise SecurityError(
            f"{what} {path}: valid only from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} "
            f"to {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )


def read_password(path: Path) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecurityError(f"password_file {path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from exc
    password = text.rstrip("\r\n")  # editors add a final newline; it is not part of the password
    if not password:
        raise SecurityError(f"password_file {path}: empty")
    return password


def load_credentials(settings: SecuritySettings) -> ClientCredentials:
    """Load and cross-check every file a secured connect needs; errors name the file and the fault."""
    if not settings.secured:
        raise SecurityError("security policy None has no credentials to load")
    assert settings.certificate and settings.private_key and settings.server_certificate and settings.application_uri
    cert = load_certificate(settings.certificate, "certificate")
    _check_validity(cert, "certificate", settings.certificate)
    uris = certificate_uris(cert)
    if settings.application_uri not in uris:
        # Servers reject a session whose ApplicationUri is not the one in the client certificate.
        raise SecurityError(
            f"certificate {settings.certificate}: application_uri {settings.application_uri!r} is not in the "
            f"certificate's subjectAltName (it holds {', '.join(map(repr, uris)) or 'no URI'})"
        )
    key = _load_private_key(settings.private_key)
    if key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise SecurityError(
            f"private_key {settings.private_key}: does not belong to certificate {settings.certificate}")
    server_cert = load_certificate(settings.server_certificate, "server_certificate")
    _check_validity(server_cert, "server_certificate", settings.server_certificate)
    return ClientCredentials(
        certificate_der=cert.public_bytes(serialization.Encoding.DER),
        private_key_der=key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        server_certificate_der=server_cert.public_bytes(serialization.Encoding.DER),
        application_uri=settings.application_uri,
        username=settings.username,
        password=read_password(settings.password_file) if settings.password_file else None,
    )
