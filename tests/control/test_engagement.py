"""Engagement state machine: the operator and the DCS always win."""

from boiler_ai.control.engagement import Engagement
from boiler_ai.messages import Event, EventType, Handshake, Mode

OK = Handshake(ai_enable=True, ai_permissive=True, ai_active=False)
GRANTED = Handshake(ai_enable=True, ai_permissive=True, ai_active=True)


def machine(n=3, grant=2):
    return Engagement(closed_loop=True, healthy_cycles_to_engage=n, grant_timeout_cycles=grant, arm_on_start=True)


def run(m, handshake, events=None):
    events = list(events or [])
    return m.update(handshake, events), events


def engage(m):
    while m.mode is not Mode.ACTIVE:
        run(m, OK)
    run(m, GRANTED)
    assert m.granted


def test_shadow_never_requests():
    m = Engagement(closed_loop=False, healthy_cycles_to_engage=1, grant_timeout_cycles=1)
    for _ in range(5):
        t, _ = run(m, GRANTED)
        assert m.mode is Mode.SHADOW and not m.requesting


def test_engages_after_n_healthy_cycles_only():
    m = machine(n=3)
    modes = [run(m, OK)[0].mode for _ in range(4)]
    assert modes == [Mode.DISABLED, Mode.DISABLED, Mode.ACTIVE, Mode.ACTIVE]


def test_unhealthy_cycle_resets_the_count():
    m = machine(n=3)
    run(m, OK)
    run(m, OK)
    _, ev = run(m, OK, [Event(EventType.IMMEDIATE_DISABLE, "critical_input_invalid", "o2_economiser_pct")])
    assert m.mode is Mode.DISABLED and m.healthy_cycles == 0
    assert [run(m, OK)[0].mode for _ in range(3)][-1] is Mode.ACTIVE


def test_without_arm_on_start_the_operator_must_switch_ai_enable_on_after_start():
    m = Engagement(closed_loop=True, healthy_cycles_to_engage=1, grant_timeout_cycles=2)
    for _ in range(3):
        _, ev = run(m, OK)
        assert m.mode is Mode.DISABLED and ev[-1].reason == "awaiting_operator_reenable"
    run(m, Handshake(False, True, False))
    run(m, OK)
    assert m.mode is Mode.ACTIVE


def test_no_entry_reasons():
    m = machine(n=1)
    _, ev = run(m, Handshake(False, True, False))
    assert ev[-1].type is EventType.NO_ENTRY and ev[-1].reason == "ai_enable_off"
    _, ev = run(m, Handshake(True, False, False))
    assert ev[-1].reason == "dcs_permissive_off" and m.mode is Mode.DISABLED
    _, ev = run(m, OK, [Event(EventType.NO_ENTRY, "policy_history_filling", "3/5")])
    assert m.mode is Mode.DISABLED and [e.reason for e in ev] == ["policy_history_filling"]


def test_ai_enable_drop_releases_in_the_same_cycle_and_needs_a_new_rising_edge():
    m = machine(n=1)
    engage(m)
    t, ev = run(m, Handshake(False, True, True))
    assert t.mode is Mode.RELEASING and t.release_reason == "ai_enable_dropped" and not m.requesting
    assert ev[0] == Event(EventType.IMMEDIATE_DISABLE, "ai_enable_dropped", "operator")
    run(m, Handshake(False, True, False))
    assert m.mode is Mode.DISABLED
    run(m, Handshake(True, True, False))  # rising edge re-arms
    assert m.mode is Mode.ACTIVE


def test_immediate_disable_releases_and_waits_for_operator():
    m = machine(n=1)
    engage(m)
    t, _ = run(m, GRANTED, [Event(EventType.IMMEDIATE_DISABLE, "guard_block", "sa_damper_a_pct")])
    assert t.release_reason == "guard_block" and m.mode is Mode.RELEASING
    run(m, OK)
    for _ in range(5):
        _, ev = run(m, OK)
        assert m.mode is Mode.DISABLED and ev[-1].reason == "awaiting_operator_reenable"
    run(m, Handshake(False, True, False))
    run(m, OK)
    assert m.mode is Mode.ACTIVE


def test_dcs_dropping_ai_active_releases():
    m = machine(n=1)
    engage(m)
    t, _ = run(m, OK)
    assert t.release_reason == "ai_active_lost"


def test_dcs_permissive_loss_releases_without_waiting_for_ai_active():
    m = machine(n=1)
    engage(m)
    t, _ = run(m, Handshake(True, False, True))
    assert t.release_reason == "dcs_permissive_lost"


def test_grant_timeout_releases():
    m = machine(n=1, grant=2)
    run(m, OK)
    assert m.mode is Mode.ACTIVE
    run(m, OK)
    run(m, OK)
    t, _ = run(m, OK)
    assert t.release_reason == "ai_active_not_granted"


def test_releasing_waits_for_dcs_confirmation():
    m = machine(n=1)
    engage(m)
    run(m, Handshake(False, True, True))
    run(m, Handshake(False, True, True))
    assert m.mode is Mode.RELEASING
    run(m, Handshake(False, True, False))
    assert m.mode is Mode.DISABLED


def test_write_failure_releases():
    m = machine(n=1)
    engage(m)
    ev = []
    t = m.write_failed("BadUserAccessDenied on sa_damper_a_pct_ai_sp", ev)
    assert t.release_reason == "write_failed" and m.mode is Mode.RELEASING


def test_state_roundtrip():
    m = machine(n=1)
    engage(m)
    other = machine(n=1)
    other.restore(m.state())
    assert other.state() == m.state()
    assert run(other, Handshake(False, True, True))[0] == run(m, Handshake(False, True, True))[0]
