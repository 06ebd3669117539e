"""The parts of ``benchmarks/chaos.py``: the run, the fault injector, the report, the ledger,
the TCP proxy that cuts and delays the network, the private brokers and clusters, and the
worker and producer processes."""
