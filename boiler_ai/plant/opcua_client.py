"""PlantIO over OPC UA: the only client code in boiler-ai that speaks OPC UA (through asyncua).

Per control cycle: one Read request of the Value attribute of every readable tag, as full DataValues so
the StatusCode and both timestamps survive (asyncua's read_values drops them), with the server's own clock
(ServerStatus/CurrentTime) as the last item; one Write request of explicitly typed Variants without
timestamps or status, then one read-back of what the DCS now holds. AI_REQUEST=1 never shares a request
with the AI setpoints: it goes, with the heartbeat, in a second Write only after every other value of the
cycle was accepted. Requests are split to the server's advertised MaxNodesPerRead / MaxNodesPerWrite.

Timestamps are optional in OPC UA and vendors differ (no SourceTimestamp, stamps only on change,
picosecond fields): a missing one is reported as NaN and never lowers the quality the server gave;
the validator decides what an absent or old timestamp means for each tag.

Nothing here raises into the control cycle: a failed read is a Snapshot with `error` set, a failed write
an ok=False WriteResult. Either drops the link, and a background task rebuilds it with capped backoff,
closing the old session before it opens the new one. Only DCS behaviour described by the OPC UA
specification is relied on (DCS vendors ship different stacks), never asyncua's server's habits.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from numbers import Real

from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState
from asyncua.crypto import uacrypto
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

from boiler_ai.messages.plant import Quality, Reading, Snapshot, WriteResult
from boiler_ai.plant.security import (
    SecurityError,
    SecuritySettings,
    load_credentials,
    thumbprint,
)
from boiler_ai.strict import ConfigError
from boiler_ai.tagmap import SignalSpec, TagMap

log = logging.getLogger(__name__)

VARIANT_TYPES = {
    "Boolean": ua.VariantType.Boolean,
    "Int32": ua.VariantType.Int32,
    "UInt32": ua.VariantType.UInt32,
    "Float": ua.VariantType.Float,
    "Double": ua.VariantType.Double,
}
INTEGER_LIMITS = {"Int32": (-(2**31), 2**31 - 1), "UInt32": (0, 2**32 - 1)}
_FLOAT32_MAX = 3.4028234663852886e38

ACCESS_CURRENT_READ = 0x01  # AccessLevel / UserAccessLevel bits (OPC 10000-3, 5.6.2)
ACCESS_CURRENT_WRITE = 0x02
SCALAR_VALUE_RANKS = (-1, -2, -3)  # Scalar, Any, ScalarOrOneDimension

STATUS_BAD_TYPE_MISMATCH = ua.StatusCodes.BadTypeMismatch  # a value we cannot read as a number

# A vendor stack may keep a session whose connection dropped until it times out; asking for a short
# timeout bounds how long such an orphan lives. Our per-cycle reads keep the live session busy.
SESSION_TIMEOUT_MS = 30_000
RECONNECT_FIRST_DELAY_S = 0.25

SERVER_CURRENT_TIME = ua.NodeId(ua.ObjectIds.Server_ServerStatus_CurrentTime)

_NODE_PATTERN = re.compile(r"^(?:ns=(\d+);|nsu=(.+?);)?([isgb]=.+)$", re.DOTALL)


class OpcUaConnectError(ConnectionError):
    """A connect failed; the message says why (unreachable, refused credentials, certificate, namespace)."""


def parse_node(text: str) -> tuple[int | str | None, str]:
    """Split a tag map NodeId into (namespace, identifier).

    'ns=3;s=X' -> (3, 's=X'); 'nsu=urn:u;s=X' -> ('urn:u', 's=X'); a bare 's=X' / 'i=5' -> (None, 's=X'),
    meaning the tag map's own namespace_uri. Raises ValueError for anything else.
    """
    match = _NODE_PATTERN.match(text)
    if match is None:
        raise ValueError(f"not a NodeId: {text!r} "
                         "(expected s=..., i=..., g=..., b=..., optionally after ns=N; or nsu=URI;)")
    index, uri, identifier = match.groups()
    try:
        ua.NodeId.from_string(f"ns=0;{identifier}")  # a malformed identifier such as 'i=abc'
    except ua.UaError as exc:
        raise ValueError(f"not a NodeId: {text!r} ({exc.args[-1]})") from None
    return (int(index) if index is not None else uri), identifier


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "no answer in time (timeout)"
    if isinstance(exc, ua.UaStatusCodeError):
        return f"{type(exc).__name__} ({ua.StatusCode(exc.code).doc})" if exc.code else type(exc).__name__
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _status_name(code: int) -> str:
    return ua.StatusCode(code).name


def _epoch(stamp: datetime | None) -> float | None:
    if stamp is None or stamp.year <= 1601:  # 1601-01-01 is the OPC UA "no time" value
        return None
    if stamp.tzinfo is None:  # OPC UA DateTime is UTC
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def _number(variant: ua.Variant | None) -> float | None:
    value = None if variant is None else variant.Value
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _server_timestamp(dv: ua.DataValue) -> float | None:
    """The ServerTimestamp, or None when absent or not to be trusted: asyncua 2.1.0 decodes the DataValue
    fields in declaration order, not the wire order of OPC 10000-6 5.2.2.17 (SourceTimestamp,
    SourcePicoseconds, ServerTimestamp, ...), so when SourcePicoseconds are present the ServerTimestamp it
    returns is built from the wrong bytes. The SourceTimestamp comes before them and is sound."""
    return None if dv.SourcePicoseconds is not None else _epoch(dv.ServerTimestamp)


def _reading(dv: ua.DataValue) -> Reading:
    """One DataValue as a Reading: the server's StatusCode as given, absent timestamps as NaN (both are
    optional). One judgement of ours: a value that is not a scalar number or bool reads NaN with
    BadTypeMismatch (unless already Bad)."""
    code = dv.StatusCode.value if dv.StatusCode is not None else 0
    value = _number(dv.Value)
    if value is None:
        value = math.nan
        if Quality.from_status_code(code) is not Quality.BAD:
            code = STATUS_BAD_TYPE_MISMATCH
    source_ts = _epoch(dv.SourceTimestamp)
    server_ts = _server_timestamp(dv)
    return Reading(value, code, math.nan if source_ts is None else source_ts,
                   math.nan if server_ts is None else server_ts)


def _server_time(dv: ua.DataValue) -> float | None:
    """ServerStatus/CurrentTime as epoch seconds, None when the server did not give it."""
    if dv.StatusCode is not None and not dv.StatusCode.is_good():
        return None
    value = dv.Value.Value if dv.Value is not None else None
    return _epoch(value) if isinstance(value, datetime) else None


def _write_problem(spec: SignalSpec, value: object) -> str | None:
    """Why `value` must not be written to `spec`'s node, or None. Checked before anything goes on the wire."""
    if isinstance(value, bool):
        value = float(value)
    if not isinstance(value, Real):
        return f"value {value!r} is not a number"
    value = float(value)
    if not math.isfinite(value):
        return f"value {value!r} is not finite"
    if not spec.lo <= value <= spec.hi:
        return f"value {value!r} is outside the tag map range [{spec.lo:g}, {spec.hi:g}]"
    if spec.data_type == "Boolean" and value not in (0.0, 1.0):
        return f"value {value!r} is not 0 or 1 (Boolean node)"
    if spec.data_type in INTEGER_LIMITS:
        lo, hi = INTEGER_LIMITS[spec.data_type]
        if not value.is_integer() or not lo <= value <= hi:
            return f"value {value!r} is not a {spec.data_type}"
    if spec.data_type == "Float" and abs(value) > _FLOAT32_MAX:
        return f"value {value!r} does not fit a Float"
    return None


def _variant(spec: SignalSpec, value: float) -> ua.Variant:
    """Typed as the node's DataType: servers reject e.g. a Double Variant written to a Float node."""
    if spec.data_type == "Boolean":
        return ua.Variant(bool(value), ua.VariantType.Boolean)
    if spec.data_type in INTEGER_LIMITS:
        return ua.Variant(int(value), VARIANT_TYPES[spec.data_type])
    return ua.Variant(float(value), VARIANT_TYPES[spec.data_type])


def _write_value(node_id: ua.NodeId, spec: SignalSpec, value: float) -> ua.WriteValue:
    # The value alone: some servers reject a written StatusCode or timestamps (BadWriteNotSupported).
    return ua.WriteValue(NodeId=node_id, AttributeId=ua.AttributeIds.Value,
                         Value=ua.DataValue(_variant(spec, value), StatusCode=None))


def _chunks(items: list, size: int | None) -> list[list]:
    if not items:
        return []
    size = size or len(items)
    return [items[i : i + size] for i in range(0, len(items), size)]


def _effective_limit(server: int | None, ours: int | None) -> int | None:
    limits = [n for n in (server, ours) if n]  # unset or 0 = no limit
    return min(limits) if limits else None


def _read_params(node_ids: list[ua.NodeId], attribute: ua.AttributeIds = ua.AttributeIds.Value) -> ua.ReadParameters:
    return ua.ReadParameters(
        MaxAge=0,  # the DCS's current value, never a cached one
        TimestampsToReturn=ua.TimestampsToReturn.Both,
        NodesToRead=[ua.ReadValueId(NodeId=n, AttributeId=attribute) for n in node_ids],
    )


@dataclass
class _Link:
    """One live connection: the client with its session, and everything resolved against that server."""

    client: Client
    node_ids: dict[str, ua.NodeId]  # every signal in the map
    read_names: list[str]  # readable signals, in the order of the prepared requests (then the server clock)
    read_requests: list[ua.ReadParameters]  # prepared once per connection, chunked
    max_read: int | None
    max_write: int | None


class OpcUaPlantIO:
    """PlantIO over OPC UA for one unit's tag map.

    `connect()` raises OpcUaConnectError with the reason; `read()`, `write()` and `verify()` never raise
    on plant-side trouble. Every network call is bounded by `timeout_s` (the connect sequence by a few
    of them). `max_nodes_per_read/write` cap requests below what the server advertises.
    """

    def __init__(
        self,
        tag_map: TagMap,
        endpoint: str,
        *,
        security: SecuritySettings | None = None,
        timeout_s: float = 2.0,
        max_nodes_per_read: int | None = None,
        max_nodes_per_write: int | None = None,
        reconnect_max_delay_s: float = 2.0,
    ):
        if not endpoint.startswith("opc.tcp://"):
            raise ValueError(f"OPC UA endpoint must be opc.tcp://host:port[/path], got {endpoint!r}")
        if not timeout_s > 0 or not reconnect_max_delay_s > 0:
            raise ValueError("timeout_s and reconnect_max_delay_s must be > 0")
        for name, cap in (("max_nodes_per_read", max_nodes_per_read), ("max_nodes_per_write", max_nodes_per_write)):
            if cap is not None and cap < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {cap}")
        self.tag_map = tag_map
        self.endpoint = endpoint
        self.security = security or SecuritySettings()
        self.timeout_s = timeout_s
        self.max_nodes_per_read = max_nodes_per_read
        self.max_nodes_per_write = max_nodes_per_write
        self.reconnect_max_delay_s = reconnect_max_delay_s
        self._nodes: dict[str, tuple[int | str | None, str]] = {}
        for name, spec in tag_map.signals.items():
            try:
                self._nodes[name] = parse_node(spec.node)
            except ValueError as exc:
                raise ConfigError(tag_map.source, f"signals.{name}.node", str(exc)) from None
        self._link: _Link | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._last_error = "never connected"
        self._closed = False

    # ---------------------------------------------------------------- connection

    @property
    def connected(self) -> bool:
        return self._link is not None

    async def connect(self) -> None:
        """Connect, or raise OpcUaConnectError saying why. Idempotent while connected."""
        if self._closed:
            raise OpcUaConnectError("this PlantIO is closed")
        if self._link is not None:
            return
        await self._stop_reconnecting()
        try:
            self._link = await self._open()
        except OpcUaConnectError as exc:
            self._last_error = str(exc)
            raise

    async def close(self) -> None:
        """Stop reconnecting and close the session; safe to call more than once."""
        self._closed = True
        await self._stop_reconnecting()
        link, self._link = self._link, None
        if link is not None:
            await self._discard(link.client)

    async def _open(self) -> _Link:
        client = Client(self.endpoint, timeout=self.timeout_s, watchdog_intervall=self.timeout_s)
        client.session_timeout = SESSION_TIMEOUT_MS
        client.name = client.description = f"boiler-ai {self.tag_map.unit}"
        client.application_uri = f"urn:boiler-ai:{self.tag_map.unit}"
        try:
            if self.security.secured:
                await self._secure(client)
            await asyncio.wait_for(client.connect(), 5 * self.timeout_s)  # socket, hello, channel, session, activate
        except Exception as exc:
            client.disconnect_socket()
            if isinstance(exc, OpcUaConnectError):
                raise
            raise OpcUaConnectError(self._connect_failure(exc)) from exc
        except BaseException:  # cancelled (close() during a reconnect): leave no socket behind
            client.disconnect_socket()
            raise
        try:
            link = await self._resolve(client)
        except Exception as exc:
            await self._discard(client)
            if isinstance(exc, OpcUaConnectError):
                raise
            raise OpcUaConnectError(
                f"connected to {self.endpoint} but could not read its namespaces: {_describe(exc)}") from exc
        except BaseException:
            client.disconnect_socket()
            raise
        client.connection_lost_callback = lambda exc: self._on_supervisor_loss(link, exc)
        log.info("OPC UA connected to %s (%s, %d tags read in %d request(s))", self.endpoint,
                 self.security.policy, len(link.read_names), len(link.read_requests))
        return link

    async def _secure(self, client: Client) -> None:
        """Load the credentials, then check the pinned certificate against what the server presents."""
        try:
            creds = load_credentials(self.security)
        except SecurityError as exc:
            raise OpcUaConnectError(str(exc)) from exc
        client.application_uri = creds.application_uri
        mode = getattr(ua.MessageSecurityMode, self.security.mode)
        # GetEndpoints runs over an unsecured channel (every server must allow it) and tells us which
        # certificate the server holds, so a swapped server is refused with a message saying so.
        endpoints = await asyncio.wait_for(client.connect_and_get_server_endpoints(), 3 * self.timeout_s)
        offered = [ep for ep in endpoints
                   if ep.SecurityPolicyUri == SecurityPolicyBasic256Sha256.URI and ep.SecurityMode == mode]
        if not offered:
            have = sorted({f"{ep.SecurityPolicyUri.rsplit('#', 1)[-1]}/{ep.SecurityMode.name}" for ep in endpoints})
            raise OpcUaConnectError(f"server at {self.endpoint} offers no Basic256Sha256/{self.security.mode} "
                                    f"endpoint (it offers {', '.join(have)})")
        presented = uacrypto.der_from_x509(uacrypto.x509_from_der(offered[0].ServerCertificate))
        if presented != creds.server_certificate_der:
            raise OpcUaConnectError(
                f"server at {self.endpoint} presents certificate {thumbprint(presented)}, not the pinned "
                f"{self.security.server_certificate} ({thumbprint(creds.server_certificate_der)}): refused"
            )
        # Encrypting to the pinned certificate keeps the pin even past this check.
        await client.set_security(
            SecurityPolicyBasic256Sha256,
            creds.certificate_der,
            creds.private_key_der,
            server_certificate=creds.server_certificate_der,
            mode=mode,
        )
        if creds.username is not None and creds.password is not None:
            client.set_user(creds.username)
            client.set_password(creds.password)

    def _connect_failure(self, exc: Exception) -> str:
        what = f"connect to {self.endpoint} failed: {_describe(exc)}"
        if isinstance(exc, (ua.uaerrors.BadUserAccessDenied, ua.uaerrors.BadIdentityTokenRejected,
                            ua.uaerrors.BadIdentityTokenInvalid)):
            return (f"{what}; the server refused user {self.security.username!r}: "
                    "check the username and the password file")
        if isinstance(exc, (ua.uaerrors.BadCertificateUntrusted, ua.uaerrors.BadCertificateInvalid,
                            ua.uaerrors.BadSecurityChecksFailed)):
            return f"{what}; the server refused our certificate: is it in the server's trusted list?"
        if isinstance(exc, ua.UaError) and "certificate mismatch" in str(exc).lower():
            return f"{what}; the server's certificate is not the pinned {self.security.server_certificate}: refused"
        return what

    async def _resolve(self, client: Client) -> _Link:
        """NodeIds against this server's NamespaceArray, its operation limits, and the prepared reads."""
        limits = ua.ObjectIds
        info = await asyncio.wait_for(client.uaclient.read(_read_params([
            ua.NodeId(limits.Server_NamespaceArray),
            ua.NodeId(limits.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead),
            ua.NodeId(limits.Server_ServerCapabilities_OperationLimits_MaxNodesPerWrite),
        ])), self.timeout_s)
        namespaces = info[0].Value.Value if info[0].StatusCode.is_good() and info[0].Value else None
        if not isinstance(namespaces, list):
            raise OpcUaConnectError(
                f"server at {self.endpoint} returned no NamespaceArray ({_status_name(info[0].StatusCode.value)})")
        server_limits = [dv.Value.Value if dv.StatusCode.is_good() and dv.Value and isinstance(dv.Value.Value, int)
                         else None for dv in info[1:]]

        node_ids: dict[str, ua.NodeId] = {}
        missing: dict[str, list[str]] = {}
        for name, (namespace, identifier) in self._nodes.items():
            if isinstance(namespace, int):
                index = namespace
            else:
                uri = namespace if namespace is not None else self.tag_map.namespace_uri
                if uri not in namespaces:
                    missing.setdefault(uri, []).append(name)
                    continue
                index = namespaces.index(uri)
            node_ids[name] = ua.NodeId.from_string(f"ns={index};{identifier}")
        if missing:
            detail = "; ".join(f"{uri!r} (used by {len(names)} tag(s), e.g. {names[0]})"
                               for uri, names in missing.items())
            raise OpcUaConnectError(f"namespace(s) of tag map {self.tag_map.source} not on the server at "
                                    f"{self.endpoint}: {detail}; server NamespaceArray: {namespaces}")
        max_read = _effective_limit(server_limits[0], self.max_nodes_per_read)
        max_write = _effective_limit(server_limits[1], self.max_nodes_per_write)
        read_names = self.tag_map.readable
        # The clock last: read after every value, so no value looks younger than it is.
        to_read = [node_ids[n] for n in read_names] + [SERVER_CURRENT_TIME]
        requests = [_read_params(chunk) for chunk in _chunks(to_read, max_read)]
        return _Link(client, node_ids, read_names, requests, max_read, max_write)

    async def _discard(self, client: Client) -> None:
        """Close a client's session if its server still answers, always drop its socket and tasks."""
        try:
            if client.state is UaClientState.CONNECTED:
                await asyncio.wait_for(client.disconnect(), self.timeout_s)
            else:
                # Stops asyncua's supervisor and renew tasks; the CloseSession itself fails on a dead socket.
                await asyncio.wait_for(client.close_session(), self.timeout_s)
        except Exception as exc:  # best effort: the old link is going away regardless
            log.debug("closing the old OPC UA session: %s", _describe(exc))
        finally:
            client.disconnect_socket()

    def _lost(self, link: _Link, reason: str) -> None:
        """The link failed: drop it and rebuild it in the background (once, however many callers notice)."""
        if self._closed or self._link is not link:
            return
        self._link = None
        self._last_error = reason
        log.warning("OPC UA link to %s lost: %s; reconnecting", self.endpoint, reason)
        self._reconnect_task = asyncio.create_task(self._reconnect(link.client))

    async def _on_supervisor_loss(self, link: _Link, exc: Exception) -> None:
        # asyncua's keep-alive noticed a dead connection between our own requests.
        self._lost(link, f"connection lost: {_describe(exc)}")

    def _ensure_reconnecting(self) -> None:
        if self._closed or self._link is not None:
            return
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.create_task(self._reconnect(None))

    async def _reconnect(self, old: Client | None) -> None:
        if old is not None:
            await self._discard(old)  # the old session goes before a new one is made
        # A short pause even before the first try: a server that just dropped us is rarely back at once,
        # and a server still shutting down may accept a connection it then never closes.
        delay = RECONNECT_FIRST_DELAY_S
        while True:
            await asyncio.sleep(delay)
            if self._closed:
                return
            try:
                link = await self._open()
            except OpcUaConnectError as exc:
                self._last_error = str(exc)
                delay = min(delay * 2, self.reconnect_max_delay_s)
                log.warning("OPC UA reconnect failed: %s; next try in %.2f s", exc, delay)
                continue
            if self._closed:
                await self._discard(link.client)
            else:
                self._link = link
            return

    async def _stop_reconnecting(self) -> None:
        task, self._reconnect_task = self._reconnect_task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    def _not_connected(self) -> str:
        self._ensure_reconnecting()
        return f"not connected to {self.endpoint}: {self._last_error}"

    # ---------------------------------------------------------------- PlantIO

    async def _read_values(self, link: _Link, requests: list[ua.ReadParameters]) -> list[ua.DataValue]:
        results: list[ua.DataValue] = []
        for params in requests:
            answer = await asyncio.wait_for(link.client.uaclient.read(params), self.timeout_s)
            if len(answer) != len(params.NodesToRead):
                raise ua.UaError(f"server answered {len(answer)} results for {len(params.NodesToRead)} nodes")
            results.extend(answer)
        return results

    async def read(self) -> Snapshot:
        """Every readable tag in one batch read (chunked to the server's limit). Never raises."""
        link = self._link
        if link is None:
            return Snapshot({}, time.time(), error=self._not_connected())
        try:
            results = await self._read_values(link, link.read_requests)
        except Exception as exc:  # any failure means: every input is invalid this cycle
            error = f"read failed: {_describe(exc)}"
            self._lost(link, error)
            return Snapshot({}, time.time(), error=error)
        read_time = time.time()
        return Snapshot({name: _reading(dv) for name, dv in zip(link.read_names, results)}, read_time,
                        server_time=_server_time(results[-1]))

    def _refusals(self, values: dict[str, float]) -> list[str]:
        problems = []
        for name, value in values.items():
            spec = self.tag_map.signals.get(name)
            if spec is None:
                problems.append(f"unknown tag {name!r} (not in {self.tag_map.source})")
            elif not spec.writable:
                problems.append(f"tag {name!r} is not on the write allow-list "
                                f"(access {spec.access} in {self.tag_map.source})")
            elif (why := _write_problem(spec, value)) is not None:
                problems.append(f"tag {name!r}: {why}")
        return problems

    def _batches(self, values: dict[str, float]) -> tuple[list[str], list[str]]:
        """The cycle's writes as (first, second) requests. A request for AI mode (AI_REQUEST=1) and the
        heartbeat that vouches for the cycle wait for a second request, sent only when the DCS accepted
        every value of the first: the DCS must never see AI_REQUEST=1 beside a setpoint it refused.
        Dropping the request (0) needs no such care and goes at once with the rest."""
        request, heartbeat = self.tag_map.handshake["ai_request"], self.tag_map.handshake["ai_heartbeat"]
        if values.get(request, 0.0) < 0.5:
            return list(values), []
        second = [name for name in (request, heartbeat) if name in values]
        return [name for name in values if name not in second], second

    async def _write_values(self, link: _Link, names: list[str], values: dict[str, float]) -> dict[str, int]:
        specs = self.tag_map.signals
        to_write = [_write_value(link.node_ids[name], specs[name], values[name]) for name in names]
        codes: list[ua.StatusCode] = []
        for chunk in _chunks(to_write, link.max_write):
            answer = await asyncio.wait_for(link.client.uaclient.write(ua.WriteParameters(NodesToWrite=chunk)),
                                            self.timeout_s)
            if len(answer) != len(chunk):
                raise ua.UaError(f"server answered {len(answer)} results for {len(chunk)} writes")
            codes.extend(answer)
        return {name: code.value for name, code in zip(names, codes)}

    async def _read_back(self, link: _Link, names: list[str]) -> dict[str, float]:
        names = [n for n in names if self.tag_map.signals[n].readable]  # a write-only tag (status codes) has none
        requests = [_read_params(chunk) for chunk in _chunks([link.node_ids[n] for n in names], link.max_read)]
        back = await self._read_values(link, requests)
        read_back = {}
        for name, dv in zip(names, back):
            # The value is what matters here, not its age: a value the daemon itself wrote may carry no
            # source timestamp (the spec allows null when the writer gave none), so only Bad is dropped.
            value = _number(dv.Value)
            code = dv.StatusCode.value if dv.StatusCode is not None else 0
            if value is not None and Quality.from_status_code(code) is not Quality.BAD:
                read_back[name] = value
        return read_back

    async def write(self, values: dict[str, float]) -> WriteResult:
        """Write typed values to allow-listed tags, then read back what the DCS holds. Never raises.

        One request (chunked to MaxNodesPerWrite), except when it asks for AI mode: then AI_REQUEST and
        the heartbeat follow in a second request only if every other value was accepted, else they are
        not written at all (absent from `status`). The read-back of the first request's tags runs beside
        the second request (different nodes, so their order does not matter), which saves a round trip.
        ok is True only when every value was written Good and the read-back succeeded. read_back holds
        every value read back without Bad quality: what the DCS holds now, which may differ from what was
        asked (clamps).
        """
        refused = self._refusals(values)
        if refused:
            return WriteResult(False, error="refused before writing: " + "; ".join(refused))
        if not values:
            return WriteResult(True)
        link = self._link
        if link is None:
            return WriteResult(False, error=self._not_connected())
        first, second = self._batches(values)
        if not first:
            first, second = second, []
        errors: list[str] = []
        status: dict[str, int] = {}
        try:
            status = await self._write_values(link, first, values)
            rejected = [f"{name} ({_status_name(code)})" for name, code in status.items()
                        if Quality.from_status_code(code) is not Quality.GOOD]
            if rejected:
                errors.append(f"write rejected: {', '.join(rejected)}")
                if second:
                    errors.append(f"not written: {', '.join(second)}")
                read_back = await self._read_back(link, first)
            elif second:
                status_2, read_back = await asyncio.gather(self._write_values(link, second, values),
                                                           self._read_back(link, first))
                status.update(status_2)
                rejected = [f"{name} ({_status_name(code)})" for name, code in status_2.items()
                            if Quality.from_status_code(code) is not Quality.GOOD]
                if rejected:
                    errors.append(f"write rejected: {', '.join(rejected)}")
            else:
                read_back = await self._read_back(link, first)
        except Exception as exc:  # any failure is a failed write, never an exception upstream
            error = f"write failed: {_describe(exc)}"
            self._lost(link, error)
            return WriteResult(False, status=status, error="; ".join([*errors, error]))
        return WriteResult(not errors, status=status, read_back=read_back, error="; ".join(errors) or None)

    async def stamping(self) -> tuple[list[str], list[str]]:
        """For `boiler-ai check --server`: read every mapped value once and say how the server stamps
        (SourceTimestamp missing, ServerTimestamp only, stamps older than the tag's stale_s as on-change
        servers keep them, picosecond fields, its clock) and what the daemon makes of it.
        Returns (report lines, problems); a problem is something that would keep the daemon from engaging."""
        link = self._link
        if link is None:
            return [], [self._not_connected()]
        try:
            results = await self._read_values(link, link.read_requests)
        except Exception as exc:  # reported as a problem, like any other
            error = f"value read failed: {_describe(exc)}"
            self._lost(link, error)
            return [], [error]
        read_time = time.time()
        server_time = _server_time(results[-1])
        now = server_time if server_time is not None else read_time
        specs = self.tag_map.signals
        server_only, neither, pico, old_judged, old_unjudged, not_good = [], [], [], [], [], []
        for name, dv in zip(link.read_names, results):
            reading = _reading(dv)
            if dv.SourcePicoseconds is not None or dv.ServerPicoseconds is not None:
                pico.append(name)
            if reading.quality is not Quality.GOOD:
                not_good.append(f"{name} ({_status_name(reading.status_code)})")
            source, server = reading.source_ts, reading.server_ts
            stamp = source if source == source else server
            if source != source:
                (server_only if server == server else neither).append(name)
            if stamp != stamp:
                continue
            stale_s = specs[name].stale_s
            if stale_s > 0 and now - stamp > stale_s:
                old_judged.append(f"{name} ({now - stamp:.0f} s > stale_s {stale_s:g})")
            elif stale_s == 0 and now - stamp > 60:
                old_unjudged.append(name)
        lines, problems = [], []
        n = len(link.read_names)
        if server_time is None:
            problems.append("the server gives no ServerStatus/CurrentTime: the daemon judges ages against its "
                            "own clock and cannot tell a stalled server from a steady plant")
        else:
            lines.append(f"clock: ServerStatus/CurrentTime read with the values; the server's clock is "
                         f"{read_time - server_time:+.3f} s from ours (ages are judged on the server's clock)")
        if not server_only and not neither:
            lines.append(f"timestamps: all {n} values carry a SourceTimestamp")
        if server_only:
            lines.append(f"timestamps: {len(server_only)} of {n} values have no SourceTimestamp, only a "
                         f"ServerTimestamp: their age is judged from it (quality is not lowered)")
        if neither:
            judged = [x for x in neither if specs[x].stale_s > 0]
            lines.append(f"timestamps: {len(neither)} of {n} values have no timestamp at all"
                         + (": their age is not judged (stale_s 0)" if not judged else ""))
            problems += [f"{x}: no timestamp but stale_s {specs[x].stale_s:g}: the daemon reads it as "
                         "no_timestamp (set stale_s 0 if its freshness cannot be shown)" for x in judged]
        if pico:
            lines.append(f"picoseconds: {len(pico)} of {n} values carry picosecond fields; asyncua 2.1.0 "
                         "decodes their ServerTimestamp wrongly, so the daemon uses only their SourceTimestamp")
            problems += [f"{x}: picosecond fields and no SourceTimestamp: its age cannot be judged"
                         for x in pico if x in server_only and specs[x].stale_s > 0]
        if old_unjudged:
            lines.append(f"on change: {len(old_unjudged)} values with stale_s 0 carry stamps over 60 s old "
                         f"(e.g. {', '.join(old_unjudged[:3])}): the server stamps on change, or they are "
                         "steady; not judged")
        problems += [f"{x}: timestamp older than its stale_s now: the server stamps on change or holds a "
                     "deadband (raise stale_s or set 0 if the value may sit still), or its source is lost"
                     for x in old_judged]
        problems += [f"{x}: not Good now" for x in not_good]
        return lines, problems

    async def verify(self) -> list[str]:
        """For `boiler-ai check --server`: every mapped node exists as a scalar Variable of the map's
        DataType, readable and writable (AccessLevel and UserAccessLevel) as the map says. Returns one
        line per problem naming the tag and the NodeId; empty means the server matches the map."""
        link = self._link
        if link is None:
            return [self._not_connected()]
        attributes = (ua.AttributeIds.NodeClass, ua.AttributeIds.DataType, ua.AttributeIds.ValueRank,
                      ua.AttributeIds.AccessLevel, ua.AttributeIds.UserAccessLevel)
        names = list(self.tag_map.signals)
        items = [ua.ReadValueId(NodeId=link.node_ids[n], AttributeId=a) for n in names for a in attributes]
        requests = [ua.ReadParameters(TimestampsToReturn=ua.TimestampsToReturn.Neither, NodesToRead=chunk)
                    for chunk in _chunks(items, link.max_read)]
        try:
            results = await self._read_values(link, requests)
        except Exception as exc:  # reported as a problem, like any other
            error = f"verification read failed: {_describe(exc)}"
            self._lost(link, error)
            return [error]
        problems = []
        width = len(attributes)
        for i, name in enumerate(names):
            problems += self._node_problems(self.tag_map.signals[name], link.node_ids[name],
                                            *results[i * width:(i + 1) * width])
        return problems

    @staticmethod
    def _node_problems(spec: SignalSpec, node_id: ua.NodeId, node_class: ua.DataValue, data_type: ua.DataValue,
                       value_rank: ua.DataValue, access: ua.DataValue, user_access: ua.DataValue) -> list[str]:
        where = f"{spec.name} ({node_id.to_string()})"
        if not node_class.StatusCode.is_good():
            return [f"{where}: node not found on the server ({_status_name(node_class.StatusCode.value)})"]
        if node_class.Value.Value != ua.NodeClass.Variable:
            return [f"{where}: is a {ua.NodeClass(node_class.Value.Value).name}, not a Variable"]
        problems = []
        expected = ua.NodeId(VARIANT_TYPES[spec.data_type].value)
        actual = data_type.Value.Value if data_type.StatusCode.is_good() else None
        if actual != expected:
            shown = actual.to_string() if isinstance(actual, ua.NodeId) else _status_name(data_type.StatusCode.value)
            if isinstance(actual, ua.NodeId) and actual.NamespaceIndex == 0 and isinstance(actual.Identifier, int):
                try:
                    shown += f" ({ua.VariantType(actual.Identifier).name})"
                except ValueError:
                    pass
            problems.append(f"{where}: DataType is {shown}, the tag map says {spec.data_type}")
        rank = value_rank.Value.Value if value_rank.StatusCode.is_good() else None
        if rank not in SCALAR_VALUE_RANKS:
            problems.append(f"{where}: ValueRank {rank} is not a scalar")
        levels = [dv.Value.Value if dv.StatusCode.is_good() and isinstance(dv.Value.Value, int) else 0
                  for dv in (access, user_access)]
        for needed, bit, verb in ((spec.readable, ACCESS_CURRENT_READ, "readable"),
                                  (spec.writable, ACCESS_CURRENT_WRITE, "writable")):
            if needed and not all(level & bit for level in levels):
                problems.append(f"{where}: not {verb} (AccessLevel 0x{levels[0]:02x}, UserAccessLevel "
                                f"0x{levels[1]:02x}) but the tag map says access {spec.access}")
        return problems
