"""Six feeders and mills, A-F, each feeding one burner level.

Per mill: the gravimetric feeder follows its demand (rate-limited), the raw coal reaches the table after
a transport dead time, is ground (first-order table inventory, time constant from grindability) and
carried by the primary air through the classifier and pipes (a second lag) to the burners: feeder to
burner about 95 s equivalent, within the 60-120 s of the ClaRa mill models (boiler-facts.md).
A mill is started (warm-up, then its feeder takes a growing share of the fuel demand), stopped (share
ramps out, the mill grinds itself empty) or tripped (coal to the burners stops at once).
"""

from __future__ import annotations

import math
from enum import IntEnum

from boiler_ai.sim.clamp import clamp, toward
from boiler_ai.sim.fireside import MILL_RATED_TPH, N_LEVELS, CoalProps

MILLS = "abcdef"
FEEDER_MAX_TPH = 65.0
FEEDER_MIN_TPH = 15.0  # a running mill below this grinds unstably
FEEDER_RATE_TPH_S = 1.0
TRANSPORT_DELAY_S = 20
CLASSIFIER_TAU_S = 20.0
WARMUP_S = 90.0  # primary air warms the mill before the feeder starts
PA_TAU_S = 20.0  # primary-air dampers of a starting or stopping mill
SHARE_RAMP_S = 120.0  # a starting (stopping) feeder takes (gives up) its share of the demand over this
# Mill wear: residue on 90 um relative to design at the same loading (mill B's rollers are worn).
WEAR = (1.0, 1.18, 1.0, 0.95, 1.04, 1.0)
_BUF = 64  # ring buffer length for the transport delay (steps)


class MillStatus(IntEnum):
    IDLE = 0
    STARTING = 1
    RUNNING = 2
    STOPPING = 3
    TRIPPED = 4


# The statuses by plain name for the per-step loops (here and in the DCS): looking a member up on
# its Enum class costs several times the comparison.
IDLE, STARTING, RUNNING, STOPPING, TRIPPED = (MillStatus.IDLE, MillStatus.STARTING, MillStatus.RUNNING,
                                              MillStatus.STOPPING, MillStatus.TRIPPED)
IN_SERVICE = (RUNNING, STOPPING)  # grinding coal to its burners
IN_SEQUENCE = (STARTING, STOPPING)  # a start or stop under way


def primary_air_tph(status: MillStatus, feeder_tph: float) -> float:
    """Primary air through a mill: about 2 t air per t coal at low loading, 1.75 near design (IDAES)."""
    if status in IN_SERVICE:
        return 30.0 + 1.15 * feeder_tph
    return 45.0 if status == STARTING else 0.0


class MillBank:
    def __init__(self, cp: CoalProps, feeder_tph: list[float], status: list[MillStatus], ambient_c: float):
        self.cp = cp
        self.status = list(status)
        self.timer = [0.0] * N_LEVELS  # seconds in the current status
        self.share = [1.0 if s == MillStatus.RUNNING else 0.0 for s in status]  # weight in the fuel split
        self.feeder = list(feeder_tph)
        self._buf = [[f] * _BUF for f in feeder_tph]
        self._idx = 0
        self.table = [f * cp.grind_tau_s for f in feeder_tph]  # coal on the table, in (t/h)*s
        self.pipes = [f * CLASSIFIER_TAU_S for f in feeder_tph]
        self.burner = list(feeder_tph)  # pulverised coal reaching each burner level, t/h
        self.outlet_temp = [self._outlet_target(i, ambient_c) for i in range(N_LEVELS)]
        self.pa = self._pa_target()  # primary air through each mill, t/h
        self.calibration = [0.0] * N_LEVELS  # each feeder's error: coal delivered / coal weighed - 1
        self.pulsation = [0.0] * N_LEVELS  # each mill's output surge now (relative)

    @property
    def in_service(self) -> list[bool]:
        return [s in IN_SERVICE for s in self.status]

    def start(self, i: int) -> None:
        if self.status[i] == MillStatus.IDLE:
            self.status[i], self.timer[i] = MillStatus.STARTING, 0.0

    def stop(self, i: int) -> None:
        if self.status[i] == MillStatus.RUNNING:
            self.status[i], self.timer[i] = MillStatus.STOPPING, 0.0

    def trip(self, i: int) -> None:
        """Mill trip: feeder and primary air stop; nothing more reaches the burners."""
        self.status[i], self.timer[i], self.share[i] = MillStatus.TRIPPED, 0.0, 0.0
        self.feeder[i] = self.table[i] = self.pipes[i] = self.burner[i] = self.pa[i] = 0.0
        self._buf[i] = [0.0] * _BUF

    def trip_all(self) -> None:
        for i in range(N_LEVELS):
            if self.status[i] != MillStatus.IDLE:
                self.trip(i)

    def r90_pct(self) -> list[float]:
        """Fineness per mill: a harder coal and a more heavily loaded or worn mill grind coarser."""
        ref = self.cp.r90_ref_pct
        return [ref * WEAR[i] * (max(self.burner[i], 10.0) / MILL_RATED_TPH) ** 0.5 for i in range(N_LEVELS)]

    def _pa_target(self) -> list[float]:
        """Per mill; a stopped mill keeps its air on while it grinds itself empty."""
        return [primary_air_tph(s, f) if s != IDLE or b < 0.5 else 30.0 + 1.15 * b
                for s, f, b in zip(self.status, self.feeder, self.burner)]

    def primary_air(self) -> list[float]:
        """Per mill, as it flows now: the hot/cold-air dampers move it smoothly (PA_TAU_S) on a start
        or stop; a trip closes them at once."""
        return self.pa

    def _outlet_target(self, i: int, ambient_c: float) -> float:
        s = self.status[i]
        if s in IN_SERVICE:
            return 78.0 - 0.8 * (self.cp.coal.moisture_pct - 12.0) - 0.15 * (self.feeder[i] - MILL_RATED_TPH)
        return 65.0 if s == STARTING else ambient_c + 15.0

    def step(self, dt: float, demand_tph: list[float], ambient_c: float) -> None:
        delay = clamp(int(round(TRANSPORT_DELAY_S / dt)), 1, _BUF - 1)
        self._idx = idx = (self._idx + 1) % _BUF
        grind_tau = self.cp.grind_tau_s
        k_tab = 1.0 - math.exp(-dt / grind_tau)
        k_cls = 1.0 - math.exp(-dt / CLASSIFIER_TAU_S)
        k_out = 1.0 - math.exp(-dt / 120.0)
        ramp = dt / SHARE_RAMP_S
        step = FEEDER_RATE_TPH_S * dt
        status, timer, share, feeder = self.status, self.timer, self.share, self.feeder
        table, pipes, burner, outlet_temp = self.table, self.pipes, self.burner, self.outlet_temp
        for i in range(N_LEVELS):
            s = status[i]
            timer[i] += dt
            if s == STARTING and timer[i] >= WARMUP_S:
                status[i], timer[i] = RUNNING, 0.0
            elif s == RUNNING:
                share[i] = min(share[i] + ramp, 1.0)
            elif s == STOPPING:
                share[i] = max(share[i] - ramp, 0.0)
                if share[i] == 0.0 and feeder[i] <= 0.0:
                    status[i], timer[i] = IDLE, 0.0
            if s == TRIPPED:
                continue
            running = status[i] in IN_SERVICE
            target = clamp(demand_tph[i], 0.0, FEEDER_MAX_TPH) if running else 0.0
            feeder[i] = f = toward(target, feeder[i], step)
            buf = self._buf[i]
            buf[idx] = f
            to_table = buf[(idx - delay) % _BUF] * (1.0 + self.calibration[i])
            # Inventories integrate exactly for a constant inflow over the step.
            ground = table[i] / grind_tau
            table[i] += (to_table * grind_tau - table[i]) * k_tab
            pipes[i] += (ground * CLASSIFIER_TAU_S - pipes[i]) * k_cls
            burner[i] = pipes[i] / CLASSIFIER_TAU_S * (1.0 + self.pulsation[i])
            outlet_temp[i] += (self._outlet_target(i, ambient_c) - outlet_temp[i]) * k_out
        k_pa = 1.0 - math.exp(-dt / PA_TAU_S)
        pa = self.pa
        for i, target in enumerate(self._pa_target()):
            if status[i] != TRIPPED:
                pa[i] += (target - pa[i]) * k_pa
