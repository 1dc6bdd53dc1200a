"""The hunter: capture, batching and the uplink to a processor."""
