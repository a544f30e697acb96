"""Benchmarks: run as modules, e.g. `python -m bench.files`; results land in bench/results/."""
