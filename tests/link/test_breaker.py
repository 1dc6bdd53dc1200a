"""Tests for lc.link.breaker.CircuitBreaker: states, transitions, counters, arguments.

The clock is a list holding the current time, so no test sleeps: time moves when a
test says so.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from lc.link.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


class Clock:
    """A settable monotonic clock."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = [t]

    def __call__(self) -> float:
        return self.t[0]

    def advance(self, dt: float) -> None:
        self.t[0] += dt


def breaker(failures: int = 3, open_seconds: float = 10.0, trials: int = 2):
    clock = Clock()
    cb = CircuitBreaker(
        failures=failures, open_seconds=open_seconds, half_open_trials=trials, clock=clock
    )
    return cb, clock


def trip(cb: CircuitBreaker) -> None:
    for _ in range(cb.failures):
        assert cb.allow()
        cb.failure()
    assert cb.state == OPEN


# ------------------------------------------------------------------------------ closed


def test_starts_closed_and_allows():
    cb, _ = breaker()
    assert cb.state == CLOSED
    assert all(cb.allow() for _ in range(100))  # closed: no limit on calls
    assert cb.retry_in() == 0.0
    assert cb.opened == 0


def test_defaults():
    cb = CircuitBreaker()
    assert (cb.failures, cb.open_seconds, cb.half_open_trials) == (5, 30.0, 3)
    assert cb.state == CLOSED


def test_opens_after_n_consecutive_failures_not_before():
    cb, _ = breaker(failures=3)
    cb.failure()
    cb.failure()
    assert cb.state == CLOSED and cb.allow()
    cb.failure()
    assert cb.state == OPEN
    assert not cb.allow()
    assert cb.opened == 1


def test_a_success_resets_the_failure_count():
    cb, _ = breaker(failures=3)
    for _ in range(10):
        cb.failure()
        cb.failure()
        cb.success()  # two failures, then a success: never three in a row
    assert cb.state == CLOSED
    assert cb.opened == 0
    cb.failure()
    cb.failure()
    cb.failure()
    assert cb.state == OPEN


def test_one_failure_threshold_opens_at_once():
    cb, _ = breaker(failures=1)
    cb.failure()
    assert cb.state == OPEN and cb.opened == 1


# -------------------------------------------------------------------------------- open


def test_open_refuses_until_open_seconds_have_passed():
    cb, clock = breaker(open_seconds=10.0)
    trip(cb)
    assert cb.retry_in() == pytest.approx(10.0)
    clock.advance(4.0)
    assert not cb.allow()
    assert cb.state == OPEN
    assert cb.retry_in() == pytest.approx(6.0)
    clock.advance(5.999)
    assert not cb.allow()
    assert cb.retry_in() == pytest.approx(0.001)
    clock.advance(0.001)  # exactly open_seconds: half open
    assert cb.retry_in() == 0.0
    assert cb.state == HALF_OPEN
    assert cb.allow()


def test_retry_in_never_negative_and_zero_long_after():
    cb, clock = breaker(open_seconds=10.0)
    trip(cb)
    clock.advance(1000.0)
    assert cb.retry_in() == 0.0
    assert cb.state == HALF_OPEN


def test_failures_and_successes_while_open_do_not_change_state():
    cb, _ = breaker(failures=2, open_seconds=10.0)
    trip(cb)
    cb.failure()
    cb.failure()
    cb.success()
    assert cb.state == OPEN
    assert cb.opened == 1
    assert cb.retry_in() == pytest.approx(10.0)  # the open period did not restart


def test_zero_open_seconds_goes_straight_to_half_open():
    cb, _ = breaker(failures=1, open_seconds=0.0, trials=1)
    cb.failure()
    assert cb.opened == 1
    assert cb.state == HALF_OPEN
    assert cb.retry_in() == 0.0
    assert cb.allow()


# --------------------------------------------------------------------------- half open


def test_half_open_lets_exactly_the_trials_through():
    cb, clock = breaker(open_seconds=10.0, trials=3)
    trip(cb)
    clock.advance(10.0)
    assert [cb.allow() for _ in range(5)] == [True, True, True, False, False]
    assert cb.state == HALF_OPEN


def test_half_open_closes_after_that_many_successes():
    cb, clock = breaker(failures=2, open_seconds=10.0, trials=3)
    trip(cb)
    clock.advance(10.0)
    for i in range(3):
        assert cb.allow()
        assert cb.state == HALF_OPEN, i
        cb.success()
    assert cb.state == CLOSED
    assert all(cb.allow() for _ in range(10))
    # closed again with a fresh failure count
    cb.failure()
    assert cb.state == CLOSED
    cb.failure()
    assert cb.state == OPEN
    assert cb.opened == 2


def test_half_open_successful_trial_frees_its_slot():
    cb, clock = breaker(open_seconds=10.0, trials=2)
    trip(cb)
    clock.advance(10.0)
    assert cb.allow() and cb.allow()
    assert not cb.allow()  # both slots taken
    cb.success()
    assert cb.allow()  # the successful one's slot is free again
    assert not cb.allow()
    cb.success()
    assert cb.state == CLOSED


@pytest.mark.parametrize("after", [0, 1, 2])
def test_half_open_any_failure_reopens(after):
    cb, clock = breaker(open_seconds=10.0, trials=3)
    trip(cb)
    clock.advance(10.0)
    for _ in range(after):
        assert cb.allow()
        cb.success()
    assert cb.allow()
    cb.failure()
    assert cb.state == OPEN
    assert cb.opened == 2
    assert not cb.allow()
    assert cb.retry_in() == pytest.approx(10.0)  # a full new open period
    clock.advance(10.0)
    assert cb.state == HALF_OPEN
    # the new half-open period starts with fresh trials
    assert [cb.allow() for _ in range(4)] == [True, True, True, False]


def test_opened_counts_every_opening():
    cb, clock = breaker(failures=1, open_seconds=1.0, trials=1)
    for n in range(1, 6):
        cb.failure()
        assert cb.opened == n
        clock.advance(1.0)
        assert cb.allow()
    cb.success()
    assert cb.state == CLOSED
    assert cb.opened == 5


# ---------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failures": 0},
        {"failures": -1},
        {"half_open_trials": 0},
        {"half_open_trials": -3},
        {"open_seconds": -0.001},
    ],
)
def test_invalid_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        CircuitBreaker(**kwargs)


def test_boundary_arguments_are_accepted():
    cb = CircuitBreaker(failures=1, open_seconds=0, half_open_trials=1)
    assert cb.state == CLOSED


# ------------------------------------------------------------------------- properties


class BreakerMachine(RuleBasedStateMachine):
    """Random calls against a model of the documented transitions."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.cb: CircuitBreaker | None = None

    @precondition(lambda self: self.cb is None)
    @rule(
        failures=st.integers(1, 4),
        open_seconds=st.sampled_from([0.0, 1.0, 5.0, 7.5]),
        trials=st.integers(1, 3),
    )
    def make(self, failures, open_seconds, trials):
        self.cb = CircuitBreaker(failures, open_seconds, trials, clock=self.clock)
        self.m_state = CLOSED
        self.m_consecutive = 0
        self.m_opened_at = 0.0
        self.m_trials = 0
        self.m_successes = 0
        self.m_opened = 0

    def _tick(self):
        cb = self.cb
        if self.m_state == OPEN and self.clock() - self.m_opened_at >= cb.open_seconds:
            self.m_state = HALF_OPEN
            self.m_trials = 0
            self.m_successes = 0

    def _open(self):
        self.m_state = OPEN
        self.m_opened_at = self.clock()
        self.m_consecutive = 0
        self.m_opened += 1

    @precondition(lambda self: self.cb is not None)
    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 2.5, 5.0, 10.0]))
    def advance(self, dt):
        self.clock.advance(dt)

    @precondition(lambda self: self.cb is not None)
    @rule()
    def allow(self):
        cb = self.cb
        was_open = cb.state == OPEN
        remaining = cb.retry_in()
        got = cb.allow()
        self._tick()
        if self.m_state == CLOSED:
            want = True
        elif self.m_state == HALF_OPEN and self.m_trials < cb.half_open_trials:
            self.m_trials += 1
            want = True
        else:
            want = False
        assert got == want
        if was_open and remaining > 0:
            assert not got  # never a call while open before the time is up

    @precondition(lambda self: self.cb is not None)
    @rule()
    def success(self):
        self.cb.success()
        if self.m_state == HALF_OPEN:
            self.m_successes += 1
            if self.m_successes >= self.cb.half_open_trials:
                self.m_state = CLOSED
                self.m_consecutive = 0
            else:
                self.m_trials = self.m_successes
        else:
            self.m_consecutive = 0

    @precondition(lambda self: self.cb is not None)
    @rule()
    def failure(self):
        self.cb.failure()
        if self.m_state == HALF_OPEN:
            self._open()
            return
        self.m_consecutive += 1
        if self.m_state == CLOSED and self.m_consecutive >= self.cb.failures:
            self._open()

    @invariant()
    def consistent(self):
        cb = self.cb
        if cb is None:
            return
        self._tick()
        state = cb.state
        assert state in (CLOSED, OPEN, HALF_OPEN)
        assert state == self.m_state
        assert cb.opened == self.m_opened
        r = cb.retry_in()
        assert r >= 0.0
        if state == OPEN:
            assert 0.0 < r <= cb.open_seconds
        else:
            assert r == 0.0


BreakerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestBreakerMachine = BreakerMachine.TestCase


@settings(max_examples=200, deadline=None)
@given(
    failures=st.integers(1, 5),
    open_seconds=st.floats(0.5, 20.0),
    trials=st.integers(1, 4),
    ops=st.lists(
        st.one_of(
            st.sampled_from(["allow", "success", "failure"]),
            st.floats(0.0, 30.0).map(lambda dt: ("tick", dt)),
        ),
        max_size=80,
    ),
)
def test_random_sequences_keep_invariants(failures, open_seconds, trials, ops):
    clock = Clock()
    cb = CircuitBreaker(failures, open_seconds, trials, clock=clock)
    opened_at = None
    prev_opened = 0
    for op in ops:
        if isinstance(op, tuple):
            clock.advance(op[1])
        elif op == "allow":
            was_open = cb.state == OPEN
            ok = cb.allow()
            if was_open and ok:  # allowed only because the open period just ran out
                assert clock() - opened_at >= open_seconds
        elif op == "success":
            cb.success()
        else:
            cb.failure()
        state = cb.state
        assert state in (CLOSED, OPEN, HALF_OPEN)
        if cb.opened != prev_opened:
            assert cb.opened == prev_opened + 1  # one call opens it at most once
            assert op == "failure"
            opened_at = clock()
            prev_opened = cb.opened
        if state == OPEN:
            assert clock() - opened_at < open_seconds
            assert not cb.allow()
            assert cb.retry_in() == pytest.approx(open_seconds - (clock() - opened_at))
