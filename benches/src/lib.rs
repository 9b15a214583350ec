//! Shared workload generation for the benchmarks.
