"""A generic OPC UA tag server built from a tag map, with fault injection for tests.

This is the server side of the plant room (the only code besides the client that imports asyncua).
The simulator (boiler_ai.sim.serve) feeds it values; tests and the demo inject faults into it.

What a client sees, per OPC UA Part 3/4/8 rather than asyncua's habits:
- Objects/<folders from the dotted string identifier>/<node>: "s=Mills.A.CoalFlow" is the variable
  CoalFlow in folder Objects/Mills/A. Other identifier types sit directly under Objects, named after
  the signal. Bare identifiers live in the tag map's namespace URI; "nsu=<uri>;" names another one.
- Float/Double tags are AnalogItemType with EURange and EngineeringUnits (UNECE codes); every
  variable carries the map's description, its DataType and an AccessLevel of read or read/write.
- Every served DataValue carries a StatusCode, the source timestamp the publisher gave and a server
  timestamp (reads return the timestamps the client asks for in TimestampsToReturn). Before the
  first value a tag reads BadWaitingForInitialData (with no value). Write-only tags read BadNotReadable.
  ServerStatus/CurrentTime reads the server's clock at the moment of the read.
- Vendor habits on request (VendorHabits: `timestamps`, `analog_deadband_pct`, `analog_decimals`): "source" stamps every
  published value (the default); "server-only" sends no SourceTimestamp (optional in OPC UA), only the
  ServerTimestamp of when the server took the value; "on-change" keeps both timestamps of a value that did
  not change (OPC 10000-4 7.7.3/7.7.4 allow it). Analogs can be rounded to `analog_decimals` and held
  inside a deadband of `analog_deadband_pct` percent of their range (as PercentDeadband, OPC 10000-8 6.2):
  with "on-change" such a value keeps its old stamps.
- `max_nodes_per_read` / `max_nodes_per_write` are advertised in ServerCapabilities/OperationLimits
  and enforced: a Read or Write with more operations is answered BadTooManyOperations as a whole.
- Client writes (Write service, Value attribute) to mapped tags are checked in this order:
  BadIndexRangeInvalid (index range on a scalar), BadNotWritable (map access is read),
  injected rejection, BadWriteNotSupported (the write carries a StatusCode or timestamps),
  BadTypeMismatch (Variant type is not the node's DataType), BadOutOfRange (NaN/inf or outside
  the tag's range, i.e. its EURange). Accepted values go to `on_write(signal, value)` first and are
  served only if it returns; if it raises, the write answers BadInternalError.

Stopping and starting: `stop()` closes the listening socket and every client connection; sessions
without subscriptions end with them, as after a real server restart (sessions with subscriptions
outlive their connection for the session timeout, as the spec allows, where a restarted server
would have lost them). The address space, values and faults stay, so `start()` comes back on the
same endpoint at once. `close()` ends everything.

`publish` writes DataValues straight into the address space (no service round trip; subscribers
are notified): about 0.25 ms for the reference unit's 91 tags, so 100 steps a second cost little.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import hmac
import ipaddress
import logging
import math
import shutil
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Self
from urllib.parse import urlparse

from asyncua import Server, ua
from asyncua.common.callback import CallbackType, ServerItemCallback
from asyncua.common.utils import ServiceError
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.address_space import AddressSpace, AttributeService
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from boiler_ai.messages.plant import Quality, Reading
from boiler_ai.plant.opcua_client import INTEGER_LIMITS, VARIANT_TYPES
from boiler_ai.plant.security import certificate_uris
from boiler_ai.tagmap import SignalSpec, TagMap

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "opc.tcp://127.0.0.1:4840"
OnWrite = Callable[[str, float], None]

_ANALOG = ("Float", "Double")
TIMESTAMP_MODES = ("source", "server-only", "on-change")
_CURRENT_TIME = ua.NodeId(ua.ObjectIds.Server_ServerStatus_CurrentTime)
_LIMITS = ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead, \
    ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerWrite

# Units used in tag maps -> UNECE Rec. 20 common code, display name, description (OPC UA Part 8
# EUInformation). A unit not listed is served with UnitId -1 ("unknown") and its text as the name.
_UNECE = {
    "MW": ("MAW", "MW", "megawatt"),
    "t/h": ("E18", "t/h", "tonne per hour"),
    "degC": ("CEL", "°C", "degree Celsius"),
    "%": ("P1", "%", "percent"),
    "kPa": ("KPA", "kPa", "kilopascal"),
    "MPa": ("MPA", "MPa", "megapascal"),
    "ppm": ("59", "ppm", "part per million"),
    "mg/Nm3": ("GP", "mg/Nm³", "milligram per cubic metre (normal)"),
    "mm": ("MMT", "mm", "millimetre"),
    "s": ("SEC", "s", "second"),
}
_UNECE_NAMESPACE = "http://www.opcfoundation.org/UA/units/un/cefact"


def _unit_id(common_code: str) -> int:
    """UnitId from a UNECE common code, as OPC UA Part 8 §5.6.3 defines it."""
    uid = 0
    for ch in common_code:
        uid = uid << 8 | ord(ch)
    return uid


def _eu_information(unit: str) -> ua.EUInformation:
    code, display, description = _UNECE.get(unit, (None, unit, unit))
    return ua.EUInformation(
        NamespaceUri=_UNECE_NAMESPACE,
        UnitId=_unit_id(code) if code else -1,
        DisplayName=ua.LocalizedText(display),
        Description=ua.LocalizedText(description),
    )


# ---------------------------------------------------------------------------------------------
# PKI folder layout (opc/pki/README.md) and self-signed certificates for tests and the demo


PKI_FOLDERS = (
    "own/certs", "own/private", "trusted/certs", "trusted/crl", "issuers/certs", "issuers/crl", "rejected/certs"
)


def create_pki(root: str | Path) -> Path:
    """Create the PKI folder layout under `root` (idempotent); own/private is readable by the owner only."""
    root = Path(root)
    for sub in PKI_FOLDERS:
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "own" / "private").chmod(0o700)
    return root


def certificate_path(pki: str | Path, name: str) -> Path:
    return Path(pki) / "own" / "certs" / f"{name}.der"


def private_key_path(pki: str | Path, name: str) -> Path:
    return Path(pki) / "own" / "private" / f"{name}.pem"


def make_certificate(
    pki: str | Path,
    name: str,
    application_uri: str,
    *,
    role: str,
    hostnames: Iterable[str] = ("localhost", "127.0.0.1"),
    days: int = 365,
) -> Path:
    """Generate a key and a self-signed application certificate into `pki`'s own/ folders.

    role "server" or "client" sets the extended key usage. The application URI goes into the
    subjectAltName: OPC UA peers reject a certificate whose URI is not the application's URI.
    Returns the certificate path (DER); the key is own/private/<name>.pem (PKCS#8, mode 0600).
    """
    usage = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}
    if role not in usage:
        raise ValueError(f"certificate role must be 'server' or 'client', got {role!r}")
    create_pki(pki)
    alt_names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    for host in hostnames:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    key = cert_gen.generate_private_key()
    cert = cert_gen.generate_self_signed_app_certificate(
        key, name, {"organizationName": "boiler-ai"}, alt_names, [usage[role]], days=days
    )
    key_file = private_key_path(pki, name)
    key_file.write_bytes(cert_gen.dump_private_key_as_pem(key))
    key_file.chmod(0o600)
    cert_file = certificate_path(pki, name)
    cert_file.write_bytes(cert.public_bytes(Encoding.DER))
    return cert_file


def trust(pki: str | Path, certificate: str | Path) -> Path:
    """Copy a peer's certificate into `pki`'s trusted/certs (pinning it); returns the copy's path."""
    create_pki(pki)
    target = Path(pki) / "trusted" / "certs" / Path(certificate).name
    shutil.copyfile(certificate, target)
    return target


@dataclass(frozen=True)
class ServerSecurity:
    """Basic256Sha256 for the server, from a PKI folder (opc/pki/README.md).

    The server presents own/certs/<certificate_name>.der with own/private/<certificate_name>.pem,
    accepts only client certificates in trusted/certs (or issued by a CA there; CRLs in
    trusted/crl) whose subjectAltName holds the client's application URI, and copies every
    rejected client certificate into rejected/certs for an administrator to inspect and trust.
    With `users` (name -> password) a session needs one of them; without, anonymous sessions
    are allowed (the client certificate is then the only credential). No endpoint without
    security is offered.
    """

    pki: Path
    users: Mapping[str, str] = field(default_factory=dict)
    modes: tuple[str, ...] = ("SignAndEncrypt",)
    certificate_name: str = "server"

    def __post_init__(self) -> None:
        bad = [m for m in self.modes if m not in ("Sign", "SignAndEncrypt")]
        if bad or not self.modes:
            raise ValueError(f"security modes must be 'Sign' and/or 'SignAndEncrypt', got {self.modes!r}")
        if any(not name or not password for name, password in self.users.items()):
            raise ValueError("security users: every user needs a name and a non-empty password")


class _Users(UserManager):
    """Sessions as plain users (never admin, so clients cannot add or delete nodes)."""

    def __init__(self, users: Mapping[str, str]):
        self._users = {name: password.encode() for name, password in users.items()}

    def get_user(self, iserver, username=None, password=None, certificate=None) -> User | None:
        if not self._users:
            return User(role=UserRole.User)
        expected = self._users.get(username or "")
        given = (password or "").encode()
        if expected is None or not hmac.compare_digest(expected, given):
            log.warning("OPC UA session refused for user %r: unknown user or wrong password", username)
            return None
        return User(role=UserRole.User, name=username)


class _TrustList:
    """Client-certificate validation against trusted/ that files what it rejects into rejected/certs."""

    _OPTIONS = (
        CertificateValidatorOptions.TIME_RANGE
        | CertificateValidatorOptions.URI
        | CertificateValidatorOptions.TRUSTED
        | CertificateValidatorOptions.REVOKED
        | CertificateValidatorOptions.PEER_CLIENT
    )

    def __init__(self, pki: Path):
        self._pki = pki
        self._validator = CertificateValidator(self._OPTIONS, TrustStore([], []))

    async def reload(self) -> None:
        """Read trusted/certs and trusted/crl again (a store built afresh, so removals count too)."""
        trusted, crl = self._pki / "trusted" / "certs", self._pki / "trusted" / "crl"
        store = TrustStore([trusted], [crl])
        if any(p.suffix.lower() in (".der", ".pem") for p in trusted.iterdir()):
            await store.load()
        else:  # an empty store trusts nobody (the library refuses to build one)
            await store.load_crl()
            log.warning("OPC UA server trusts no client certificate yet: %s is empty", trusted)
        self._validator = CertificateValidator(self._OPTIONS, store)

    async def __call__(self, cert: x509.Certificate, app: ua.ApplicationDescription) -> None:
        try:
            await self._validator.validate(cert, app)
        except ServiceError as exc:
            der = cert.public_bytes(Encoding.DER)
            thumb = hashlib.sha1(der).hexdigest().upper()  # the thumbprint OPC UA tools show
            (self._pki / "rejected" / "certs").mkdir(parents=True, exist_ok=True)
            (self._pki / "rejected" / "certs" / f"{thumb}.der").write_bytes(der)
            log.warning(
                "OPC UA client certificate rejected (%s): %s, application %s; filed as rejected/certs/%s.der",
                ua.StatusCode(exc.code).name, cert.subject.rfc4514_string(), app.ApplicationUri, thumb,
            )
            raise


# ---------------------------------------------------------------------------------------------
# Fault injection


class FaultKind(enum.Enum):
    FREEZE = "freeze"  # value and source timestamp stop updating
    BAD_QUALITY = "bad_quality"  # Bad StatusCode, no value
    UNCERTAIN = "uncertain"  # live value with an Uncertain StatusCode
    NAN = "nan"  # NaN with StatusCode Good (a faulty DCS)
    OUT_OF_RANGE = "out_of_range"  # a fixed value outside the tag's range with StatusCode Good


@dataclass(frozen=True, slots=True)
class ReadFault:
    kind: FaultKind
    code: int = ua.StatusCodes.Good
    value: float | None = None


class Faults:
    """Faults injected into what clients read and write, in the server's own process.

    Each takes effect at once (the served value is rewritten before the call returns) and lasts
    until `clear`. A tag has at most one read fault; a new one replaces the old. Read faults touch
    only what is served: the publisher's values keep being recorded, so `clear` serves the latest.
    """

    def __init__(self, server: TagServer):
        self._server = server
        self.read: dict[str, ReadFault] = {}
        self.write_rejects: dict[str | None, int] = {}  # signal (None = every writable tag) -> code
        self.delay_s = 0.0

    async def freeze(self, signal: str) -> None:
        await self._set(signal, ReadFault(FaultKind.FREEZE))

    async def bad_quality(self, signal: str, code: int = ua.StatusCodes.BadSensorFailure) -> None:
        await self._set(signal, ReadFault(FaultKind.BAD_QUALITY, _severity(code, Quality.BAD, "bad_quality")))

    async def uncertain(self, signal: str, code: int = ua.StatusCodes.UncertainSensorNotAccurate) -> None:
        await self._set(signal, ReadFault(FaultKind.UNCERTAIN, _severity(code, Quality.UNCERTAIN, "uncertain")))

    async def nan(self, signal: str) -> None:
        spec = self._server.spec(signal)
        if spec.data_type not in _ANALOG:
            raise ValueError(f"nan fault on tag {signal!r}: a {spec.data_type} cannot hold NaN")
        await self._set(signal, ReadFault(FaultKind.NAN))

    async def out_of_range(self, signal: str, value: float) -> None:
        spec = self._server.spec(signal)
        if spec.lo <= value <= spec.hi:
            raise ValueError(f"out_of_range fault on tag {signal!r}: {value} is inside [{spec.lo}, {spec.hi}]")
        _to_python(spec, value)  # must still fit the node's type (no -1 in a UInt32)
        await self._set(signal, ReadFault(FaultKind.OUT_OF_RANGE, value=value))

    def reject_writes(self, signal: str | None = None, code: int = ua.StatusCodes.BadNotWritable) -> None:
        """Answer client writes to `signal` (None: to every writable tag) with `code`, a Bad StatusCode."""
        if signal is not None and not self._server.spec(signal).writable:
            raise ValueError(f"reject_writes on tag {signal!r}: it is not writable anyway")
        self.write_rejects[signal] = _severity(code, Quality.BAD, "reject_writes")

    def slow(self, seconds: float) -> None:
        """Delay every client Read and Write service call by `seconds` before it is served (0 ends it).

        The request waits, then is served with the values of that moment. A connection's requests
        are handled in order, so later ones queue behind. Browse, subscriptions and session
        services are not delayed.
        """
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"slow: delay must be a finite number of seconds >= 0, got {seconds}")
        self.delay_s = float(seconds)

    async def clear(self, signal: str | None = None) -> None:
        """End the faults of `signal`, or every fault (including slow and write rejections) with None."""
        if signal is None:
            names = list(self.read)
            self.read.clear()
            self.write_rejects.clear()
            self.delay_s = 0.0
        else:
            self._server.spec(signal)
            names = [signal] if self.read.pop(signal, None) else []
            self.write_rejects.pop(signal, None)
        for name in names:
            await self._server._refresh(name)

    async def _set(self, signal: str, fault: ReadFault) -> None:
        self._server.spec(signal)
        self.read[signal] = fault
        await self._server._refresh(signal)


def _severity(code: int, quality: Quality, what: str) -> int:
    if Quality.from_status_code(code) is not quality:
        raise ValueError(f"{what}: StatusCode {ua.StatusCode(code).name} (0x{code:08X}) is not {quality.name}")
    return code


def _to_python(spec: SignalSpec, value: float) -> bool | int | float:
    """The Python value a node of the tag's type holds, or an error naming the tag."""
    kind = spec.data_type
    if kind in _ANALOG:
        return float(value)
    if kind == "Boolean":
        if value in (0, 1):
            return bool(value)
    elif math.isfinite(value) and value == int(value):
        lo, hi = INTEGER_LIMITS[kind]
        if lo <= value <= hi:
            return int(value)
    raise ValueError(f"tag {spec.name!r}: {value!r} is not a valid {kind}")


# ---------------------------------------------------------------------------------------------
# The server


@dataclass(slots=True)
class _Tag:
    spec: SignalSpec
    uri: str
    identifier: ua.NodeId  # identifier and type; the namespace index is set when the server is built
    folders: tuple[str, ...]  # folder path under Objects
    browse_name: str
    vtype: ua.VariantType
    nodeid: ua.NodeId | None = None


_GOOD = ua.StatusCode(ua.StatusCodes.Good)
_NO_VALUE_YET = ua.StatusCode(ua.StatusCodes.BadWaitingForInitialData)
_ADMIN = User(role=UserRole.Admin)  # the base service's default caller (the server itself)


@dataclass(frozen=True)
class VendorHabits:
    """How a server stamps and shapes what it serves, and its request limits (see the module docstring).
    Checked here, so a bad option names itself before anything is served."""

    timestamps: str = "source"  # source | server-only | on-change
    analog_deadband_pct: float = 0.0  # percent of each analog's range
    analog_decimals: int | None = None
    max_nodes_per_read: int | None = None  # None: no limit
    max_nodes_per_write: int | None = None

    def __post_init__(self) -> None:
        if self.timestamps not in TIMESTAMP_MODES:
            raise ValueError(f"timestamps must be one of {', '.join(TIMESTAMP_MODES)}, got {self.timestamps!r}")
        if not (math.isfinite(self.analog_deadband_pct) and 0 <= self.analog_deadband_pct < 100):
            raise ValueError(f"analog deadband must be a percentage of range in [0, 100), got "
                             f"{self.analog_deadband_pct}")
        if self.analog_decimals is not None and not 0 <= self.analog_decimals <= 15:
            raise ValueError(f"analog decimals must be 0..15, got {self.analog_decimals}")
        for what, cap in (("max nodes per read", self.max_nodes_per_read),
                          ("max nodes per write", self.max_nodes_per_write)):
            if cap is not None and not 1 <= cap <= 2**32 - 1:
                raise ValueError(f"{what} must be a UInt32 of at least 1, got {cap}")


class _PlantAttributeService(AttributeService):
    """The server's Read/Write service, with the plant's rules for the Value of mapped tags."""

    def __init__(self, aspace: AddressSpace, tags: TagServer):
        super().__init__(aspace)
        self._tags = tags

    def read(self, params: ua.ReadParameters) -> list[ua.DataValue]:
        limit = self._tags.habits.max_nodes_per_read
        if limit and len(params.NodesToRead) > limit:
            raise ServiceError(ua.StatusCodes.BadTooManyOperations)
        results = super().read(params)
        wanted = params.TimestampsToReturn
        keep_source = wanted in (ua.TimestampsToReturn.Source, ua.TimestampsToReturn.Both)
        keep_server = wanted in (ua.TimestampsToReturn.Server, ua.TimestampsToReturn.Both)
        for i, rv in enumerate(params.NodesToRead):
            if rv.AttributeId != ua.AttributeIds.Value:
                continue
            if rv.NodeId == _CURRENT_TIME and results[i].StatusCode.is_good():
                now = datetime.now(UTC)  # the clock now, not asyncua's once-a-second copy of it
                results[i] = ua.DataValue(ua.Variant(now, ua.VariantType.DateTime), _GOOD,
                                          now if keep_source else None, now if keep_server else None)
                continue
            if rv.NodeId not in self._tags._by_node:
                continue
            if rv.NodeId in self._tags._write_only:
                results[i] = ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadNotReadable))
            elif not (keep_source and keep_server):
                # Part 4 §5.10.2: only the timestamps the client asked for.
                dv = results[i]
                results[i] = replace(
                    dv,
                    SourceTimestamp=dv.SourceTimestamp if keep_source else None,
                    ServerTimestamp=dv.ServerTimestamp if keep_server else None,
                )
        return results

    async def write(self, params: ua.WriteParameters, user: User = _ADMIN) -> list[ua.StatusCode]:
        limit = self._tags.habits.max_nodes_per_write
        if limit and len(params.NodesToWrite) > limit:
            raise ServiceError(ua.StatusCodes.BadTooManyOperations)
        results: list[ua.StatusCode] = []
        for wv in params.NodesToWrite:
            tag = self._tags._by_node.get(wv.NodeId) if wv.AttributeId == ua.AttributeIds.Value else None
            if tag is None:
                results += await super().write(ua.WriteParameters(NodesToWrite=[wv]), user)
            else:
                results.append(ua.StatusCode(await self._tags._client_write(tag, wv.Value, wv.IndexRange)))
        return results


class TagServer:
    """Serves the signals of a tag map (plus `extra_signals`) over OPC UA; see the module docstring.

    endpoint: opc.tcp://HOST:PORT; port 0 picks a free port at the first start and keeps it.
    security: None offers SecurityPolicy None with anonymous sessions (the local simulator);
    a ServerSecurity offers Basic256Sha256 only.
    on_write(signal, value): receives every accepted client write (bools as 0.0/1.0).
    habits: how values are stamped and shaped, and the request limits (VendorHabits).
    """

    def __init__(
        self,
        tag_map: TagMap,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        security: ServerSecurity | None = None,
        on_write: OnWrite | None = None,
        extra_signals: Iterable[SignalSpec] = (),
        application_uri: str | None = None,
        name: str | None = None,
        habits: VendorHabits = VendorHabits(),
    ):
        self.habits = habits
        url = urlparse(endpoint)
        if url.scheme != "opc.tcp" or not url.hostname:
            raise ValueError(f"endpoint {endpoint!r}: expected opc.tcp://HOST:PORT")
        self._host, self._port, self._path = url.hostname, url.port if url.port is not None else 4840, url.path
        self.tag_map = tag_map
        self.security = security
        self.on_write = on_write
        self.application_uri = application_uri or f"urn:boiler-ai:server:{tag_map.unit}"
        self.name = name or f"boiler-ai {tag_map.unit}"
        self.faults = Faults(self)
        self._tags: dict[str, _Tag] = {}
        extra_signals = list(extra_signals)
        self._layout(tag_map, extra_signals)
        self._own = {spec.name for spec in extra_signals}  # not the plant's: no deadband or rounding
        self._by_node: dict[ua.NodeId, _Tag] = {}
        self._write_only: set[ua.NodeId] = set()
        # signal -> (value served, its source timestamp, when the server took it)
        self._latest: dict[str, tuple[bool | int | float, datetime, datetime]] = {}
        self._ua: Server | None = None
        self._trust: _TrustList | None = None
        self._serving = False
        self._closed = False

    # -- layout: from NodeId strings to folders, checked before anything is served

    def _layout(self, tag_map: TagMap, extra: list[SignalSpec]) -> None:
        specs = [(spec, tag_map.source) for spec in tag_map.signals.values()]
        specs += [(spec, "extra_signals") for spec in extra]
        variables: dict[tuple[str, str], str] = {}
        folders: dict[tuple[str, str], str] = {}
        for spec, source in specs:
            where = f"signals.{spec.name}.node"
            if spec.name in self._tags:
                raise ValueError(f"{source}: signals.{spec.name}: the signal name is already served")
            if spec.node.lstrip().startswith(("ns=", "srv=")):
                raise ValueError(
                    f"{source}: {where}: {spec.node!r}: the server places nodes by namespace URI; "
                    "write the identifier alone (tag map namespace) or as nsu=<uri>;..."
                )
            try:
                node = ua.NodeId.from_string(spec.node)
            except (ua.UaStringParsingError, ValueError) as exc:
                raise ValueError(f"{source}: {where}: {spec.node!r} is not a NodeId ({exc})") from None
            uri = getattr(node, "NamespaceUri", None) or tag_map.namespace_uri
            identifier = ua.NodeId(node.Identifier, 0, node.NodeIdType)
            if node.NodeIdType == ua.NodeIdType.String:
                *path, browse_name = str(node.Identifier).split(".")
                if not browse_name or not all(path):
                    raise ValueError(f"{source}: {where}: {spec.node!r} has an empty part between dots")
            else:
                path, browse_name = [], spec.name
            key = (uri, identifier.to_string())
            if key in variables:
                raise ValueError(f"{source}: {where}: {spec.node!r} is also the node of {variables[key]!r}")
            variables[key] = spec.name
            for depth in range(1, len(path) + 1):
                folders.setdefault((uri, "s=" + ".".join(path[:depth])), spec.name)
            self._tags[spec.name] = _Tag(spec, uri, identifier, tuple(path), browse_name, VARIANT_TYPES[spec.data_type])
        for key, name in variables.items():
            if key in folders:
                raise ValueError(
                    f"signals.{name}.node: {key[1]!r} is a variable and also a folder of {folders[key]!r}'s node"
                )

    # -- public API

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self._host}:{self._port}{self._path}"

    @property
    def serving(self) -> bool:
        return self._serving

    @property
    def signals(self) -> list[str]:
        return list(self._tags)

    def spec(self, signal: str) -> SignalSpec:
        try:
            return self._tags[signal].spec
        except KeyError:
            raise KeyError(f"unknown tag {signal!r} (not served: not in the tag map {self.tag_map.source})") from None

    async def start(self) -> None:
        """Start serving (the first call builds the address space); again after `stop()`, resume."""
        if self._closed:
            raise RuntimeError("TagServer is closed")
        if self._serving:
            return
        if self._ua is None:
            if self._port == 0:
                self._port = _free_port(self._host)
            try:
                self._ua = await self._build()
                if self._trust:
                    await self._trust.reload()
                await self._ua.start()
            except BaseException:
                self._ua = None  # half built (asyncua stopped it): the next start() builds afresh
                raise
        else:
            if self._trust:
                await self._trust.reload()  # trust what an administrator moved into trusted/ meanwhile
            assert self._ua.bserver is not None
            await self._ua.bserver.start()
        self._serving = True
        log.debug("OPC UA server %s serving %d tags", self.endpoint, len(self._tags))

    async def stop(self) -> None:
        """Stop serving: close the listening socket and every client connection. `start()` resumes."""
        if self._serving and self._ua is not None and self._ua.bserver is not None:
            await self._ua.bserver.stop()
        self._serving = False

    async def close(self) -> None:
        """Stop serving and shut the server down for good."""
        await self.stop()
        if self._ua is not None and not self._closed:
            iserver = self._ua.iserver
            if iserver.time_task is not None:
                # Its clock loop sleeps 1 s between ticks and stop() would wait it out: end it now.
                iserver.time_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await iserver.time_task
                iserver.time_task = None
            await iserver.stop()
        self._closed = True

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def publish(self, values: Mapping[str, float], source_ts: float) -> None:
        """Serve new values (signal -> value; bools as 0/1) measured at `source_ts` (epoch seconds).

        Tags not in `values` keep what they served. Checked first, so a bad entry (unknown tag,
        NaN or a fraction for an integer or boolean tag) changes nothing and names the tag.
        """
        converted = []
        for name, value in values.items():
            tag = self._tags.get(name)
            if tag is None:
                raise KeyError(f"publish: unknown tag {name!r} (not served: not in the tag map {self.tag_map.source})")
            converted.append((tag, _to_python(tag.spec, value)))
        source = datetime.fromtimestamp(source_ts, UTC)
        server_ts = datetime.now(UTC)
        on_change = self.habits.timestamps == "on-change"
        changed = []
        for tag, value in converted:
            name = tag.spec.name
            previous = self._latest.get(name)
            if tag.spec.data_type in _ANALOG and name not in self._own:
                value = self._analog(tag.spec, value, None if previous is None else previous[0])
            if on_change and previous is not None and previous[0] == value:
                continue  # unchanged: keeps the stamps it has
            self._latest[name] = (value, source, server_ts)
            changed.append(tag)
        if self._ua is None:
            return  # recorded; served when the server is built
        aspace = self._ua.iserver.aspace
        for tag in changed:
            dv = self._datavalue(tag, server_ts)
            if dv is not None:
                await aspace.write_attribute_value(tag.nodeid, ua.AttributeIds.Value, dv)

    def served(self, signal: str) -> Reading:
        """What a client reading `signal` gets now (NaN value when there is none, NaN timestamp when unset)."""
        tag = self._tags[self.spec(signal).name]
        if self._ua is None:
            return Reading(math.nan, ua.StatusCodes.BadWaitingForInitialData, math.nan)
        dv = self._ua.iserver.aspace.read_attribute_value(tag.nodeid, ua.AttributeIds.Value)
        raw = dv.Value.Value if dv.Value is not None else None
        return Reading(
            math.nan if raw is None else float(raw),
            dv.StatusCode.value if dv.StatusCode is not None else ua.StatusCodes.Good,
            dv.SourceTimestamp.timestamp() if dv.SourceTimestamp else math.nan,
        )

    # -- internals

    def _analog(self, spec: SignalSpec, value: float, served: float | None) -> float:
        """An analog as this server serves it: rounded, and held at the served value inside the deadband."""
        decimals = self.habits.analog_decimals
        if decimals is not None and math.isfinite(value):
            value = round(value, decimals)
        band = self.habits.analog_deadband_pct / 100 * (spec.hi - spec.lo)
        if served is not None and band > 0 and math.isfinite(value) and math.isfinite(served) \
                and abs(value - served) <= band:
            return served
        return value

    def _datavalue(self, tag: _Tag, now: datetime) -> ua.DataValue | None:
        """The DataValue to serve for `tag` through its fault; None while frozen (serve what is there).
        A fault changes what is served now, so it carries the server timestamp `now`."""
        fault = self.faults.read.get(tag.spec.name)
        if fault is not None and fault.kind is FaultKind.FREEZE:
            return None
        latest = self._latest.get(tag.spec.name)
        if latest is None:
            return ua.DataValue(ua.Variant(), _NO_VALUE_YET, None, now)
        value, source, server_ts = latest
        if self.habits.timestamps == "server-only":
            source = None
        status = _GOOD
        if fault is not None:
            server_ts = now
            if fault.kind is FaultKind.BAD_QUALITY:
                # OPC UA Part 4 §7.7.1: with a Bad StatusCode the value is null.
                return ua.DataValue(ua.Variant(), ua.StatusCode(fault.code), source, server_ts)
            if fault.kind is FaultKind.UNCERTAIN:
                status = ua.StatusCode(fault.code)
            elif fault.kind is FaultKind.NAN:
                value = math.nan
            elif fault.kind is FaultKind.OUT_OF_RANGE:
                assert fault.value is not None
                value = _to_python(tag.spec, fault.value)
        return ua.DataValue(ua.Variant(value, tag.vtype), status, source, server_ts)

    async def _refresh(self, signal: str) -> None:
        if self._ua is None:
            return
        tag = self._tags[signal]
        dv = self._datavalue(tag, datetime.now(UTC))
        if dv is not None:
            await self._ua.iserver.aspace.write_attribute_value(tag.nodeid, ua.AttributeIds.Value, dv)

    async def _client_write(self, tag: _Tag, dv: ua.DataValue, index_range: str | None) -> int:
        spec = tag.spec
        if index_range:
            return ua.StatusCodes.BadIndexRangeInvalid
        if not spec.writable:
            return ua.StatusCodes.BadNotWritable
        rejects = self.faults.write_rejects
        if spec.name in rejects or None in rejects:
            return rejects.get(spec.name, rejects.get(None))
        if (dv.StatusCode is not None and not dv.StatusCode.is_good()) or dv.SourceTimestamp or dv.ServerTimestamp:
            return ua.StatusCodes.BadWriteNotSupported
        variant = dv.Value
        if variant is None or variant.VariantType != tag.vtype or variant.is_array:
            return ua.StatusCodes.BadTypeMismatch
        value = float(variant.Value)
        if not (math.isfinite(value) and spec.lo <= value <= spec.hi):
            return ua.StatusCodes.BadOutOfRange
        if self.on_write is not None:
            try:
                self.on_write(spec.name, value)
            except Exception:
                log.exception("OPC UA write of %r = %r: the plant refused it", spec.name, value)
                return ua.StatusCodes.BadInternalError
        now = datetime.now(UTC)
        self._latest[spec.name] = (variant.Value, now, now)
        await self._refresh(spec.name)
        return ua.StatusCodes.Good

    async def _delay(self, event: ServerItemCallback, _dispatcher: object) -> None:
        if self.faults.delay_s > 0 and event.is_external:
            await asyncio.sleep(self.faults.delay_s)

    async def _build(self) -> Server:
        server = Server(user_manager=_Users(self.security.users if self.security else {}))
        if self.security is None:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
            server.set_identity_tokens([ua.AnonymousIdentityToken])
        else:
            await self._secure(server, self.security)  # first: a wrong certificate fails fast
        server.product_uri = "urn:boiler-ai"
        server.manufacturer_name = "boiler-ai"
        server.set_server_name(self.name)
        await server.init()
        await server.set_application_uri(self.application_uri)
        server.set_endpoint(self.endpoint)
        server.iserver.attribute_service = _PlantAttributeService(server.iserver.aspace, self)
        for event in (CallbackType.PreRead, CallbackType.PreWrite):
            server.subscribe_server_callback(event, self._delay)
        await self._add_nodes(server)
        limits = ua.WriteParameters(NodesToWrite=[
            ua.WriteValue(NodeId=ua.NodeId(node), AttributeId=ua.AttributeIds.Value,
                          Value=ua.DataValue(ua.Variant(cap or 0, ua.VariantType.UInt32)))
            for node, cap in zip(_LIMITS, (self.habits.max_nodes_per_read, self.habits.max_nodes_per_write))])
        for result in await server.iserver.isession.write(limits):
            result.check()
        return server

    async def _secure(self, server: Server, security: ServerSecurity) -> None:
        cert_file = certificate_path(security.pki, security.certificate_name)
        key_file = private_key_path(security.pki, security.certificate_name)
        for path, what in ((cert_file, "certificate"), (key_file, "private key")):
            if not path.is_file():
                raise FileNotFoundError(f"server {what} {path} is missing (make_certificate creates a self-signed one)")
        await server.load_certificate(str(cert_file))
        await server.load_private_key(str(key_file))
        cert = server.iserver.certificate
        uris = certificate_uris(cert)
        if self.application_uri not in uris:
            raise ValueError(
                f"server certificate {cert_file}: application URI {self.application_uri!r} is not in its "
                f"subjectAltName ({', '.join(map(repr, uris)) or 'no URI'}); clients would reject it"
            )
        if server.iserver.private_key.public_key().public_numbers() != cert.public_key().public_numbers():
            raise ValueError(f"server private key {key_file} does not belong to certificate {cert_file}")
        policy = {
            "Sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
            "SignAndEncrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
        }
        server.set_security_policy([policy[mode] for mode in security.modes])
        server.set_identity_tokens([ua.UserNameIdentityToken] if security.users else [ua.AnonymousIdentityToken])
        self._trust = _TrustList(create_pki(security.pki))
        server.set_certificate_validator(self._trust)

    async def _add_nodes(self, server: Server) -> None:
        objects = ua.NodeId(ua.ObjectIds.ObjectsFolder)
        index: dict[str, int] = {}
        for tag in self._tags.values():
            if tag.uri not in index:
                index[tag.uri] = await server.register_namespace(tag.uri)
        folders: dict[ua.NodeId, ua.AddNodesItem] = {}
        variables: list[ua.AddNodesItem] = []
        properties: list[ua.AddNodesItem] = []
        for tag in self._tags.values():
            ns = index[tag.uri]
            parent = objects
            for depth in range(1, len(tag.folders) + 1):
                folder = ua.NodeId(".".join(tag.folders[:depth]), ns, ua.NodeIdType.String)
                if folder not in folders:
                    folders[folder] = _folder_item(folder, parent, tag.folders[depth - 1], ns)
                parent = folder
            tag.nodeid = ua.NodeId(tag.identifier.Identifier, ns, tag.identifier.NodeIdType)
            self._by_node[tag.nodeid] = tag
            if tag.spec.access == "write":
                self._write_only.add(tag.nodeid)
            variables.append(_variable_item(tag, parent, ns))
            if tag.spec.data_type in _ANALOG:
                properties += _analog_properties(tag, ns)
        session = server.iserver.isession
        for items in (list(folders.values()), variables, properties):
            for item, result in zip(items, await session.add_nodes(items), strict=True):
                if not result.StatusCode.is_good():
                    raise ValueError(f"OPC UA node {item.RequestedNewNodeId.to_string()}: {result.StatusCode.name}")
        self._ua = server  # _refresh writes into it
        for name in self._tags:
            await self._refresh(name)

def _variable_item(tag: _Tag, parent: ua.NodeId, ns: int) -> ua.AddNodesItem:
    spec = tag.spec
    access = (ua.AccessLevel.CurrentRead.mask if spec.readable else 0) | (
        ua.AccessLevel.CurrentWrite.mask if spec.writable else 0
    )
    attrs = ua.VariableAttributes()
    attrs.DisplayName = ua.LocalizedText(tag.browse_name)
    attrs.Description = ua.LocalizedText(spec.description)
    attrs.Value = ua.Variant()  # BadWaitingForInitialData until the first publish (see _add_nodes)
    attrs.DataType = ua.NodeId(tag.vtype.value)
    attrs.ValueRank = ua.ValueRank.Scalar
    attrs.ArrayDimensions = []
    attrs.AccessLevel = attrs.UserAccessLevel = access
    attrs.Historizing = False
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = tag.nodeid
    item.BrowseName = ua.QualifiedName(tag.browse_name, ns)
    item.NodeClass = ua.NodeClass.Variable
    item.ParentNodeId = parent
    item.ReferenceTypeId = ua.NodeId(ua.ObjectIds.Organizes)
    item.TypeDefinition = ua.NodeId(
        ua.ObjectIds.AnalogItemType if spec.data_type in _ANALOG else ua.ObjectIds.BaseDataVariableType
    )
    item.NodeAttributes = attrs
    return item


def _folder_item(nodeid: ua.NodeId, parent: ua.NodeId, name: str, ns: int) -> ua.AddNodesItem:
    attrs = ua.ObjectAttributes()
    attrs.DisplayName = ua.LocalizedText(name)
    attrs.EventNotifier = 0
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = nodeid
    item.BrowseName = ua.QualifiedName(name, ns)
    item.NodeClass = ua.NodeClass.Object
    item.ParentNodeId = parent
    item.ReferenceTypeId = ua.NodeId(ua.ObjectIds.Organizes)
    item.TypeDefinition = ua.NodeId(ua.ObjectIds.FolderType)
    item.NodeAttributes = attrs
    return item


def _analog_properties(tag: _Tag, ns: int) -> list[ua.AddNodesItem]:
    """EURange and EngineeringUnits of an AnalogItemType variable (OPC UA Part 8 §5.3.2)."""
    props = [("EURange", ua.Range(Low=tag.spec.lo, High=tag.spec.hi), ua.ObjectIds.Range)]
    if tag.spec.unit:
        props.append(("EngineeringUnits", _eu_information(tag.spec.unit), ua.ObjectIds.EUInformation))
    items = []
    for name, value, data_type in props:
        attrs = ua.VariableAttributes()
        attrs.DisplayName = ua.LocalizedText(name)
        attrs.Value = ua.Variant(value, ua.VariantType.ExtensionObject)
        attrs.DataType = ua.NodeId(data_type)
        attrs.ValueRank = ua.ValueRank.Scalar
        attrs.ArrayDimensions = []
        attrs.AccessLevel = attrs.UserAccessLevel = ua.AccessLevel.CurrentRead.mask
        attrs.Historizing = False
        item = ua.AddNodesItem()
        item.RequestedNewNodeId = ua.NodeId(0, ns)  # null identifier: the server numbers properties
        item.BrowseName = ua.QualifiedName(name, 0)
        item.NodeClass = ua.NodeClass.Variable
        item.ParentNodeId = tag.nodeid
        item.ReferenceTypeId = ua.NodeId(ua.ObjectIds.HasProperty)
        item.TypeDefinition = ua.NodeId(ua.ObjectIds.PropertyType)
        item.NodeAttributes = attrs
        items.append(item)
    return items


def _free_port(host: str) -> int:
    """A port nobody listens on now (bound and released at once); for tests and port 0."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
