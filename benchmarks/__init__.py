"""hkdviz's benchmark and probe scripts (index: benchmarks/README.md; results: docs/benchmarks.md).

A package so that tests import them (`from benchmarks import bench_quality`) and they run as
`python -m benchmarks.bench_core` from the repository root as well as `python benchmarks/bench_core.py`.
Not installed with hkdviz (pyproject's package list is `hkdviz*` only)."""
