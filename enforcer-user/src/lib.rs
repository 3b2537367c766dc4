//! enforcer's node agent as a library: the binary (`src/main.rs`) and the test suites use
//! the same code.

pub mod agent;
pub mod bpf;
pub mod cgroup;
pub mod guards;
pub mod kube;
pub mod kubelet;
pub mod manifests;
pub mod model;
pub mod policy;
pub mod runtime_policy;
pub mod status;
