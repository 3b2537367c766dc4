//! Harness of the real-cluster tier (`cargo xtask test cluster`): a handle on the cluster
//! that `cargo xtask cluster up` runs on this machine (kubectl through its wrapper, which
//! enters the node's network namespace), namespaces that clean up after themselves, and
//! agnhost pods to connect from and to.
//!
//! Tests skip (loudly) unless `ENFORCER_CLUSTER=1` is set, which the tier does after it
//! has brought the cluster up and deployed the enforcer.

use std::{
    io::Write,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// The kubectl wrapper `cargo xtask cluster up` writes.
pub const KUBECTL: &str = "/var/lib/enforcer-cluster/bin/kubectl";
/// agnhost as the cluster has it imported (never pulled).
pub const AGNHOST: &str = "registry.k8s.io/e2e-test-images/agnhost:2.56";
/// The enforcer's namespace, DaemonSet and service account (deploy/base).
pub const ENFORCER_NS: &str = "enforcer-system";

/// The cluster, when the tier provides one; `None` (after a loud skip) otherwise.
pub fn cluster(test: &str) -> Option<Kube> {
    if std::env::var("ENFORCER_CLUSTER").as_deref() != Ok("1") {
        crate::skip(
            test,
            "no real cluster (run it with `cargo xtask test cluster`, which brings one up)",
        );
        return None;
    }
    Some(Kube)
}

/// kubectl against the cluster.
#[derive(Clone, Copy)]
pub struct Kube;

impl Kube {
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(KUBECTL)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
    }

    /// kubectl that must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply -f -` of a YAML document stream.
    pub fn apply(&self, yaml: &str) {
        let mut child = Command::new(KUBECTL)
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl apply");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kubectl apply failed:\n{}\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("kubectl json")
    }

    /// Wait for `kubectl wait` CONDITION on TARGET in NS.
    pub fn wait(&self, ns: &str, target: &str, condition: &str, secs: u32) {
        self.ok(&[
            "-n",
            ns,
            "wait",
            target,
            &format!("--for={condition}"),
            &format!("--timeout={secs}s"),
        ]);
    }

    /// `kubectl exec` in a pod: (exit code, stdout + stderr).
    pub fn exec(&self, ns: &str, pod: &str, cmd: &[&str]) -> (i32, String) {
        let mut args = vec!["-n", ns, "exec", pod, "--"];
        args.extend_from_slice(cmd);
        let out = self.run(&args);
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// A pod's IP (waits until it has one).
    pub fn pod_ip(&self, ns: &str, pod: &str) -> String {
        let start = Instant::now();
        loop {
            let v = self.json(&["-n", ns, "get", "pod", pod]);
            if let Some(ip) = v["status"]["podIP"].as_str() {
                return ip.to_string();
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "{ns}/{pod}: no IP"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    pub fn service_ip(&self, ns: &str, svc: &str) -> String {
        let v = self.json(&["-n", ns, "get", "service", svc]);
        v["spec"]["clusterIP"]
            .as_str()
            .expect("clusterIP")
            .to_string()
    }

    /// agnhost `connect` from a pod: "ok", or the failure agnhost reports.
    pub fn connect(&self, ns: &str, pod: &str, target: &str, proto: &str) -> String {
        let (code, out) = self.exec(
            ns,
            pod,
            &[
                "/agnhost",
                "connect",
                target,
                "--timeout=3s",
                &format!("--protocol={proto}"),
            ],
        );
        if code == 0 {
            "ok".into()
        } else {
            out.trim().to_string()
        }
    }
}

/// A namespace created for one test, deleted (without waiting) when dropped, also when
/// the test fails.
pub struct TestNamespace {
    pub kube: Kube,
    pub name: String,
}

impl TestNamespace {
    pub fn new(kube: Kube, prefix: &str, labels: &[(&str, &str)]) -> Self {
        let name = format!("{prefix}-{}", crate::unique("").replace('x', "-"));
        let mut y = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n");
        if !labels.is_empty() {
            y.push_str("  labels:\n");
            for (k, v) in labels {
                y.push_str(&format!("    {k}: \"{v}\"\n"));
            }
        }
        kube.apply(&y);
        // The namespace's default service account must exist before pods are created.
        let start = Instant::now();
        while !kube
            .run(&["-n", &name, "get", "serviceaccount", "default"])
            .status
            .success()
        {
            assert!(start.elapsed() < Duration::from_secs(60), "no default SA");
            std::thread::sleep(Duration::from_millis(300));
        }
        Self { kube, name }
    }

    pub fn apply(&self, yaml: &str) {
        self.kube.apply(&yaml.replace("NAMESPACE", &self.name));
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = self
            .kube
            .run(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}

/// A busybox pod that sleeps (a shell to exec into), with `labels`.
pub fn busybox_pod(name: &str, labels: &[(&str, &str)]) -> String {
    let mut l = String::new();
    for (k, v) in labels {
        l.push_str(&format!("    {k}: \"{v}\"\n"));
    }
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: NAMESPACE
  labels:
    shell: \"yes\"
{l}spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: shell
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: [/bin/busybox, sleep, \"36000\"]
---
"
    )
}

/// busybox as the cluster has it imported.
pub const BUSYBOX: &str = "docker.io/library/busybox:1.35-debian-static";

/// An agnhost pod serving HTTP on 80 and UDP on 81 (`netexec`), with `labels`, and an
/// optional security context block (indented YAML under the container).
pub fn agnhost_pod(name: &str, labels: &[(&str, &str)], security: &str) -> String {
    let mut l = String::new();
    for (k, v) in labels {
        l.push_str(&format!("    {k}: \"{v}\"\n"));
    }
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: NAMESPACE
  labels:
{l}spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: agnhost
    image: {AGNHOST}
    imagePullPolicy: IfNotPresent
    args: [netexec, --http-port=80, --udp-port=81]
    ports:
    - {{containerPort: 80, name: http}}
    - {{containerPort: 81, name: udp, protocol: UDP}}
{security}---
"
    )
}
