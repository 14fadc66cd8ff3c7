"""Benchmarks: each prints a table of figures measured side by side in one run and
returns (and writes) them as JSON. Run through `drr bench ...`."""
