"""The parts of ``benchmarks/chaos.py``: the ledger, the TCP proxy that cuts and delays the
network, the private brokers, and the worker and producer processes."""
