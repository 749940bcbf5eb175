"""Benchmarks: training throughput of ninlab against a seed-style pipeline and a bare loop, FLOP rates, inference."""
