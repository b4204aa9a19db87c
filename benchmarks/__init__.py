"""kgraph's benchmark suite: `python -m benchmarks` writes RESULTS.md and results.png."""
