"""The delivery link a hunter and a processor tree share: the outbox (memory, then the
disk spool), the spool, the circuit breaker and the uplink (sessions, backoff, flow
control, acknowledgements) to the next processor up.

Imports ``common`` and ``proto`` only; ``hunter`` and ``processor`` both build on it and
never import each other.
"""
