"""The daemon configuration file (example: deploy/examples/reference_unit.yaml).

Paths inside it are relative to the file itself, so a config and the files it names move together.
Loading is strict: an unknown or missing key, a wrong type or a file that does not exist fails with
the config file and the field named. The config hash pins the whole effective configuration
(this file plus the tag map, envelope and model bytes) into every decision record.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

from boiler_ai.addresses import listen_address, opc_endpoint, zmq_endpoint
from boiler_ai.messages import settings
from boiler_ai.messages.settings import CONTROL_MODES, FSYNC_POLICIES
from boiler_ai.plant import security
from boiler_ai.strict import ConfigError, Fields, load_yaml

PLANT_KINDS = ("opcua", "stepped")
PM_QOS_MAX_US = 2_000_000_000  # the largest CPU latency request Linux accepts


@dataclass(frozen=True)
class OpcUaConfig:
    """`plant: {kind: opcua, ...}`: the unit's DCS over OPC UA."""

    kind: ClassVar[str] = "opcua"
    endpoint: str
    timeout_s: float
    max_nodes_per_read: int | None
    max_nodes_per_write: int | None
    security: security.SecuritySettings


@dataclass(frozen=True)
class SteppedConfig:
    """`plant: {kind: stepped, scenario: NAME, seed: N, ai_enable: BOOL}`: the simulated reference unit in
    process, stepped by one cycle period per cycle as fast as it goes (no network, no waiting)."""

    kind: ClassVar[str] = "stepped"
    scenario: str
    seed: int
    ai_enable: bool  # the simulated operator's AI_ENABLE from the start (as `boiler-ai sim --ai-enable`)


@dataclass(frozen=True)
class EngagementConfig:
    healthy_cycles_to_engage: int
    grant_timeout_cycles: int
    arm_on_start: bool


@dataclass(frozen=True)
class PolicyConfig:
    max_spread: float  # ensemble std, in units of each action's allowed deviation from the DCS setpoint
    training_envelope_margin: float  # fraction of each input's training range tolerated outside it
    out_of_depth_hold_s: float  # hold the last action this long while the model is unsure, then release


@dataclass(frozen=True)
class CurveConfig:
    """`record.curve`: ZeroMQ CURVE on the publisher and the catch-up service (layout: boiler_ai/record/curve.py).
    The files are read when the daemon starts (and by `check`), like the log directory: they live on the host."""

    server_secret_key: Path  # the daemon's key pair, server.key_secret
    authorized_clients: Path  # directory of the admitted clients' public keys (*.key)


@dataclass(frozen=True)
class RecordConfig:
    log_dir: Path
    publish_endpoint: str | None
    catchup_endpoint: str | None
    fsync: str
    fsync_interval_ms: int
    segment_max_mb: float
    segment_max_age_s: float
    retention_days: float  # 0 keeps every record
    retention_max_mb: float | None  # total size the log may keep; None: no size limit
    queue_size: int
    state_every_cycles: int
    curve: CurveConfig | None = None  # None: in clear (`curve: off`), or nothing is served


@dataclass(frozen=True)
class Challenger:
    """A second model run in shadow beside the active one (`boiler-ai model install`), to switch to."""

    path: Path
    sha256: str
    previous: bool  # the model that was active before the last switch: what `boiler-ai model rollback` returns to


@dataclass(frozen=True)
class DaemonConfig:
    source: Path
    unit: str
    tag_map: Path
    envelope: Path
    model_path: Path | None  # None only in observe mode
    model_sha256: str | None
    mode: str
    cycle_period_s: float
    time_scale: float  # plant seconds per wall second: 1 unless a simulator drives time (never from a file)
    plant: OpcUaConfig | SteppedConfig
    engagement: EngagementConfig
    policy: PolicyConfig
    record: RecordConfig
    metrics_listen: str | None  # "host:port" for the Prometheus endpoint, or None
    log_level: str
    cpu_latency_limit_us: int | None  # PM QoS limit held while running (boiler_ai.host); None: the OS decides
    challenger: Challenger | None = None

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        return None if self.metrics_listen is None else listen_address(self.metrics_listen)

    def config_hash(self) -> str:
        """sha256 over this file and every file it brings in, so a record names its exact setup."""
        digest = hashlib.sha256()
        challenger = None if self.challenger is None else self.challenger.path
        for path in (self.source, self.tag_map, self.envelope, self.model_path, challenger):
            if path is not None:
                digest.update(path.read_bytes())
        return digest.hexdigest()


def _path(f: Fields, key: str, base: Path, *, must_exist: bool = True, default=...) -> Path | None:
    value = f.raw(key, default)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise f.error(key, f"expected a path, got {value!r}")
    path = (base / value).resolve()
    if must_exist and not path.exists():
        raise f.error(key, f"file not found: {path}")
    return path


def _security(f: Fields, base: Path) -> security.SecuritySettings:
    policy = f.string("policy", choices=security.POLICIES)
    if policy == "None":
        f.done()
        return security.SecuritySettings()
    try:
        settings = security.SecuritySettings(
            policy=policy,
            mode=f.string("mode", choices=security.MODES),
            certificate=_path(f, "certificate", base),
            private_key=_path(f, "private_key", base),
            server_certificate=_path(f, "server_certificate", base),
            application_uri=f.string("application_uri"),
            username=f.string("username", None),
            password_file=_path(f, "password_file", base, default=None),
        )
    except security.SecurityError as exc:
        raise f.error("", str(exc)) from None
    f.done()
    return settings


def _plant(f: Fields, base: Path) -> OpcUaConfig | SteppedConfig:
    kind = f.string("kind", choices=PLANT_KINDS)
    if kind == "stepped":
        from boiler_ai.sim.scenario import SCENARIOS  # only a simulated plant needs the simulator

        plant = SteppedConfig(scenario=f.string("scenario", choices=tuple(SCENARIOS)), seed=f.integer("seed", 0, lo=0),
                              ai_enable=f.boolean("ai_enable", False))
        f.done()
        return plant
    plant = OpcUaConfig(
        endpoint=f.address("endpoint", opc_endpoint),
        timeout_s=f.number("timeout_s", 2.0, lo=0.05),
        max_nodes_per_read=f.integer("max_nodes_per_read", None, lo=1),
        max_nodes_per_write=f.integer("max_nodes_per_write", None, lo=1),
        security=_security(f.mapping("security", {"policy": "None"}), base),
    )
    f.done()
    return plant


def _model(top: Fields, base: Path, mode: str) -> tuple[Path | None, str | None]:
    """The pinned model; observe mode runs without one (and refuses one, so nobody thinks it runs)."""
    if mode == "observe":
        if top.has("model"):
            raise top.error("model", "observe mode runs no model: remove model:, or choose mode: shadow")
        return None, None
    if not top.has("model"):
        raise top.error("model", "required field is missing (a unit without a model yet runs mode: observe)")
    model = top.mapping("model")
    model_path, sha = _pinned(model, base)
    model.done()
    return model_path, sha


def _pinned(f: Fields, base: Path) -> tuple[Path, str]:
    path = _path(f, "path", base)
    sha = f.string("sha256")
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise f.error("sha256", "expected 64 lowercase hex digits (sha256sum of the .onnx file)")
    return path, sha


def _challenger(top: Fields, base: Path, mode: str, active_sha: str | None) -> Challenger | None:
    if not top.has("challenger"):
        return None
    if mode == "observe":
        raise top.error("challenger", "observe mode runs no model: a challenger runs beside an active model")
    f = top.mapping("challenger")
    path, sha = _pinned(f, base)
    if sha == active_sha:
        raise f.error("sha256", "the challenger is the active model: remove challenger:")
    challenger = Challenger(path, sha, f.boolean("previous", False))
    f.done()
    return challenger


def _curve(rc: Fields, base: Path, record: RecordConfig) -> CurveConfig | None:
    """CURVE is on whenever the record stream is served, unless the file says `curve: off` in so many words."""
    serving = record.publish_endpoint is not None or record.catchup_endpoint is not None
    if not rc.has("curve"):
        if serving:
            raise rc.error("curve", "required field is missing: give server_secret_key and authorized_clients "
                                    "(create them with boiler-ai keys DIR --client NAME), or write curve: off "
                                    "to serve the decision stream to anyone who can reach the port")
        return None
    value = rc.raw("curve")
    if value is False:  # YAML reads `off` (and `false`, `no`) as false
        return None
    if not isinstance(value, dict):
        raise rc.error("curve", f"expected off, or server_secret_key and authorized_clients, got {value!r}")
    curve = rc.mapping("curve")
    keys = CurveConfig(server_secret_key=_path(curve, "server_secret_key", base, must_exist=False),
                       authorized_clients=_path(curve, "authorized_clients", base, must_exist=False))
    curve.done()
    return keys if serving else None  # nothing served: no keys to read


def load_config(path: str | Path) -> DaemonConfig:
    path = Path(path).resolve()
    base = path.parent
    top = Fields(path, "", load_yaml(path))

    mode = top.string("mode", choices=CONTROL_MODES)
    model_path, sha = _model(top, base, mode)
    challenger = _challenger(top, base, mode, sha)

    if top.has("opcua"):
        raise top.error("opcua", "moved: write it as `plant:` with `kind: opcua` and the same keys "
                                 "(plant: {kind: opcua, endpoint: ..., timeout_s: ..., security: ...})")
    plant = _plant(top.mapping("plant"), base)

    en = top.mapping("engagement")
    engagement = EngagementConfig(
        healthy_cycles_to_engage=en.integer("healthy_cycles_to_engage", lo=1),
        grant_timeout_cycles=en.integer("grant_timeout_cycles", lo=1),
        arm_on_start=en.boolean("arm_on_start"),
    )
    en.done()

    po = top.mapping("policy")
    policy = PolicyConfig(
        max_spread=po.number("max_spread", lo=0.0),
        training_envelope_margin=po.number("training_envelope_margin", lo=0.0),
        out_of_depth_hold_s=po.number("out_of_depth_hold_s", lo=0.0),
    )
    po.done()

    rc = top.mapping("record")
    record = RecordConfig(
        log_dir=_path(rc, "log_dir", base, must_exist=False),
        publish_endpoint=rc.address("publish_endpoint", zmq_endpoint, None),
        catchup_endpoint=rc.address("catchup_endpoint", zmq_endpoint, None),
                fsync=rc.string("fsync", choices=FSYNC_POLICIES),
        fsync_interval_ms=rc.integer("fsync_interval_ms", settings.LOG_FSYNC_INTERVAL_MS, lo=1),
        segment_max_mb=rc.number("segment_max_mb", settings.LOG_SEGMENT_MAX_MB, lo=0.01),
        segment_max_age_s=rc.number("segment_max_age_s", settings.LOG_SEGMENT_MAX_AGE_S, lo=1.0),
        retention_days=rc.number("retention_days", settings.LOG_RETENTION_DAYS, lo=0.0),
        retention_max_mb=rc.number("retention_max_mb", None, lo=1.0),
        queue_size=rc.integer("queue_size", settings.LOG_QUEUE_SIZE, lo=1),
        state_every_cycles=rc.integer("state_every_cycles", 60, lo=1),
    )
    if record.publish_endpoint is not None and record.publish_endpoint == record.catchup_endpoint:
        raise rc.error("catchup_endpoint", f"{record.catchup_endpoint} is also the publish_endpoint: give each its own")
    record = replace(record, curve=_curve(rc, base, record))
    rc.done()

    metrics = top.mapping("metrics", {"listen": None})
    metrics_listen = metrics.address("listen", _listen, None)
    metrics.done()

    host = top.mapping("host", {})
    cpu_latency_limit_us = host.integer("cpu_latency_limit_us", None, lo=0)
    if cpu_latency_limit_us is not None and cpu_latency_limit_us > PM_QOS_MAX_US:
        raise host.error("cpu_latency_limit_us", f"must be <= {PM_QOS_MAX_US} (the kernel's largest), "
                                                 f"got {cpu_latency_limit_us}; null leaves it to the OS")
    host.done()

    cfg = DaemonConfig(
        source=path,
        unit=top.string("unit"),
        tag_map=_path(top, "tag_map", base),
        envelope=_path(top, "envelope", base),
        model_path=model_path,
        model_sha256=sha,
        mode=mode,
        cycle_period_s=top.number("cycle_period_s", lo=0.01),
        time_scale=_time_scale(top),
        plant=plant,
        engagement=engagement,
        policy=policy,
        record=record,
        metrics_listen=metrics_listen,
        log_level=top.string("log_level", "info", choices=("debug", "info", "warning", "error")),
        cpu_latency_limit_us=cpu_latency_limit_us,
        challenger=challenger,
    )
    top.done()
    return cfg


def _listen(text: str) -> str:
    listen_address(text)  # a malformed address fails here, naming metrics.listen
    return text


def _time_scale(top: Fields) -> float:
    """A config file runs against a plant whose time is real: `time_scale` (which multiplies every rate
    limit, age and hold per wall second) is for a simulator driving time, set by the demo and the tests
    (`boiler-ai run --sim-speed`), never by a file the daemon may run at a plant with."""
    scale = top.number("time_scale", 1.0, lo=0.001)
    if scale != 1.0:
        raise top.error("time_scale", f"{scale:g} would multiply every rate limit by {scale:g} against a real-time "
                                      "DCS: only a simulator drives time (boiler-ai demo; boiler-ai run --sim-speed "
                                      "N against boiler-ai sim --speed N); remove it")
    return scale


def check_unit_matches(cfg: DaemonConfig, tag_map_unit: str) -> None:
    if cfg.unit != tag_map_unit:
        raise ConfigError(cfg.source, "unit",
                          f"{cfg.unit!r} but the tag map {cfg.tag_map} is for unit {tag_map_unit!r}")
