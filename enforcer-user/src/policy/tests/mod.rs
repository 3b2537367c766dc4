//! Tests of the policy compiler: hand-built clusters feature by feature (`semantics`),
//! random clusters against a reference evaluator (`differential`), and a large cluster
//! (`scale`). `harness` holds the builders, the datapath simulation and the reference.

mod differential;
mod harness;
mod scale;
mod semantics;
