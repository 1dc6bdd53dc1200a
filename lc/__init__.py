"""lc: distributed packet capture (hunters -> mutual-TLS gRPC -> processors)."""

__version__ = "0.1.0"
