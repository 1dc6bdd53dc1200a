"""The processor: gRPC services, hunter registry, PCAP writers."""
