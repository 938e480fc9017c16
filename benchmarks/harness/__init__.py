"""The benchmark harness behind benchmarks/run.py (not part of the fcgi_async package)."""
