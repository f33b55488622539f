"""syncd's benchmark harness: platform fakes with latency and rate limits, scenarios, and
the table. Run ``python -m benchmarks.run --help``; not part of the test suite."""
