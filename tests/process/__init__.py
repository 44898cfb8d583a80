"""Tests of the process shell: operator commands, several instances, the benchmarks."""
