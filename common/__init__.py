"""Shared, I/O-free building blocks: packet decoding, pcap files, credentials, config."""
