//! The deploy check (one check of the `lint` tier): every manifest under `deploy/` is
//! validated offline against the real Kubernetes schemas (`kubernetes-validate`, strict), the
//! RuntimePolicy examples against the CRD's openAPIV3Schema, every kustomization is rendered
//! (with `kubectl kustomize` where kubectl is installed) and validated, the agent's RBAC and
//! DaemonSet keep their least-privilege shape, and the e2e scripts pass shellcheck. It first
//! proves that it rejects the broken fixtures in `xtask/src/deploy_check/invalid/`. The logic
//! is in `deploy_check/validate.py`; `cargo xtask setup` creates its virtualenv.

use std::{path::PathBuf, process::Command};

use crate::util::{cache_dir, root};

/// Python packages of the check's virtualenv, pinned (kubernetes-validate bundles the
/// Kubernetes OpenAPI schemas of 1.25 to 1.37, so validation is offline).
pub const REQUIREMENTS: &[&str] = &[
    "kubernetes-validate==1.37.0",
    "jsonschema==4.26.0",
    "PyYAML==6.0.3",
];

/// Kubernetes versions validated against: the oldest this deployment supports (1.30: the
/// `appArmorProfile` field), the one the agent's API types target, and the newest known.
pub const K8S_VERSIONS: &[&str] = &["1.30", "1.33", "1.37"];

pub fn venv_dir() -> PathBuf {
    cache_dir().join("venv")
}

pub fn venv_python() -> PathBuf {
    venv_dir().join("bin/python")
}

/// The command the lint tier runs.
pub fn command() -> Command {
    let root = root();
    let here = root.join("xtask/src/deploy_check");
    if !venv_python().exists() {
        let mut c = Command::new("sh");
        c.args([
            "-c",
            "echo 'deploy check: no virtualenv at $0: run cargo xtask setup' >&2; exit 1",
        ])
        .arg(venv_dir());
        return c;
    }
    let mut c = Command::new(venv_python());
    c.arg(here.join("validate.py"))
        .arg("--root")
        .arg(root.join("deploy"))
        .arg("--invalid")
        .arg(here.join("invalid"))
        .arg("--shellcheck")
        .arg(root.join("tests/e2e"));
    for v in K8S_VERSIONS {
        c.args(["--k8s-version", v]);
    }
    c.current_dir(&root);
    c
}
