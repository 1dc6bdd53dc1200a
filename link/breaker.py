"""A circuit breaker around an uplink's connect / register / stream calls.

States and transitions (``now`` is a monotonic clock, passed in so tests need no sleep):

===========  ==========================================  ==========================
state        a call is ...                               next state
===========  ==========================================  ==========================
closed       allowed                                     open after ``failures``
                                                         consecutive failures
open         refused (:meth:`allow` is False) until      half_open when
             ``open_seconds`` have passed                ``open_seconds`` are over
half_open    allowed for ``half_open_trials`` calls      closed after that many
                                                         successes in a row; open
                                                         again on any failure
===========  ==========================================  ==========================

A success in the closed state resets the failure count. The defaults are the ones
hunters' operators know from lippycat (5 failures, 30 s, 3 trials); ``lc hunt``
exposes all three. While the breaker is open the hunter makes no network calls at
all: capture goes on and batches go to the disk spool.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "CircuitBreaker"]

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        failures: int = 5,
        open_seconds: float = 30.0,
        half_open_trials: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1 or half_open_trials < 1 or open_seconds < 0:
            raise ValueError("failures and half_open_trials must be >= 1, open_seconds >= 0")
        self.failures = failures
        self.open_seconds = open_seconds
        self.half_open_trials = half_open_trials
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._trials = 0  # calls let through while half open
        self._trial_successes = 0
        self.opened = 0  # times it opened

    @property
    def state(self) -> str:
        with self._lock:
            self._tick()
            return self._state

    def _tick(self) -> None:
        if self._state == OPEN and self._clock() - self._opened_at >= self.open_seconds:
            self._state = HALF_OPEN
            self._trials = 0
            self._trial_successes = 0

    def allow(self) -> bool:
        """May a call be made now? (Counts as a trial while half open.)"""
        with self._lock:
            self._tick()
            if self._state == CLOSED:
                return True
            if self._state == HALF_OPEN and self._trials < self.half_open_trials:
                self._trials += 1
                return True
            return False

    def retry_in(self) -> float:
        """Seconds until the breaker lets a call through again (0 if it does now)."""
        with self._lock:
            self._tick()
            if self._state != OPEN:
                return 0.0
            return max(0.0, self.open_seconds - (self._clock() - self._opened_at))

    def success(self) -> None:
        with self._lock:
            if self._state == HALF_OPEN:
                self._trial_successes += 1
                if self._trial_successes >= self.half_open_trials:
                    self._state = CLOSED
                    self._consecutive = 0
                else:  # a successful trial frees its slot for the next one
                    self._trials = self._trial_successes
            else:
                self._consecutive = 0

    def failure(self) -> None:
        with self._lock:
            if self._state == HALF_OPEN:
                self._open()
                return
            self._consecutive += 1
            if self._state == CLOSED and self._consecutive >= self.failures:
                self._open()

    def _open(self) -> None:
        self._state = OPEN
        self._opened_at = self._clock()
        self._consecutive = 0
        self.opened += 1
