"""The wire contract (lc.proto) and its generated Python code (checked in; see make proto-check)."""
