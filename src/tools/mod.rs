//! Tools around the pipeline, each behind a command: the demo on an embedded mock cluster and
//! the benchmarks. They use the service as users would and are never on its path.

pub mod bench;
pub mod bench_instances;
pub mod bench_processes;
pub mod demo;
mod demo_queries;
mod scrape;
pub mod state_bench;
pub mod state_latency;
pub mod state_restart;
