//! Which runtime guards apply to which pod.
//!
//! Two sources, combined per pod:
//! - the namespace's Pod Security Admission labels: `pod-security.kubernetes.io/enforce`
//!   selects the guard set enforced for every pod of the namespace, and
//!   `pod-security.kubernetes.io/audit` the set that is only reported (`privileged` or no
//!   label: none);
//! - `RuntimePolicy` objects (`enforcer.dev/v1alpha1`, namespaced) that select pods with a
//!   podSelector and list guards (or a whole profile) with a mode, Enforce or Audit.
//!
//! Everything is a union: a guard enforced by any source is enforced; a guard only audited
//! by some source (and enforced by none) is audited.
//!
//! Guard sets (documented in docs/runtime-guards.md):
//! - `baseline`: root-escalation, dangerous-capabilities, mount, kernel-modules, ptrace (of
//!   processes outside the pod), bpf, host-devices, sysctl-write. Raw sockets stay allowed, as
//!   the Baseline Pod Security Standard keeps CAP_NET_RAW.
//! - `restricted`: baseline, plus raw-sockets, any exec by uid 0, and ptrace of any process.

use std::collections::BTreeMap;

use enforcer_common::*;
use serde::Deserialize;

use crate::{
    manifests::convert::{FieldError, label_selector_from},
    model::{Cluster, LabelSelector, Namespace, ObjectRef},
};

pub const PSA_ENFORCE: &str = "pod-security.kubernetes.io/enforce";
pub const PSA_AUDIT: &str = "pod-security.kubernetes.io/audit";

pub const BASELINE: u32 = GUARD_ROOT_ESCALATION
    | GUARD_DANGEROUS_CAPABILITIES
    | GUARD_MOUNT
    | GUARD_KERNEL_MODULES
    | GUARD_PTRACE
    | GUARD_BPF
    | GUARD_HOST_DEVICES
    | GUARD_SYSCTL_WRITE;
pub const RESTRICTED: u32 = BASELINE | GUARD_RAW_SOCKETS | GUARD_ROOT_EXEC | GUARD_PTRACE_ANY;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "privileged" => Some(Level::Privileged),
            "baseline" => Some(Level::Baseline),
            "restricted" => Some(Level::Restricted),
            _ => None,
        }
    }

    pub fn guards(self) -> u32 {
        match self {
            Level::Privileged => 0,
            Level::Baseline => BASELINE,
            Level::Restricted => RESTRICTED,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Audit,
}

/// A validated RuntimePolicy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimePolicy {
    pub namespace: String,
    pub name: String,
    pub pod_selector: LabelSelector,
    /// Guard bits enforced / audited for the selected pods.
    pub enforce: u32,
    pub audit: u32,
}

impl RuntimePolicy {
    pub fn key(&self) -> ObjectRef {
        ObjectRef {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

pub use crate::guards::{GUARD_NAMES, guard_by_name};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Spec {
    #[serde(default)]
    pod_selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    #[serde(default)]
    profile: Option<ProfileSpec>,
    #[serde(default)]
    guards: Vec<GuardSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProfileSpec {
    level: String,
    #[serde(default)]
    mode: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GuardSpec {
    name: String,
    #[serde(default)]
    mode: Option<String>,
    /// root-escalation: also deny any exec by uid 0; ptrace: deny tracing of any process.
    #[serde(default)]
    strict: bool,
}

fn mode(value: Option<&str>, field: &str, errs: &mut Vec<FieldError>) -> Mode {
    match value {
        None | Some("Enforce") => Mode::Enforce,
        Some("Audit") => Mode::Audit,
        Some(other) => {
            errs.push(FieldError {
                field: field.into(),
                message: format!(
                    "unsupported value {other:?}: supported values are \"Enforce\", \"Audit\""
                ),
            });
            Mode::Enforce
        }
    }
}

/// Validate a RuntimePolicy object (the whole object as JSON, already known to be of this
/// kind, with `namespace` and `name` from its metadata).
pub fn convert(
    namespace: &str,
    name: &str,
    object: &serde_json::Value,
) -> Result<RuntimePolicy, Vec<FieldError>> {
    let mut errs = Vec::new();
    let spec_value = object
        .get("spec")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    if spec_value.is_null() {
        return Err(vec![FieldError {
            field: "spec".into(),
            message: "required".into(),
        }]);
    }
    let spec: Spec = match serde_json::from_value(spec_value) {
        Ok(s) => s,
        Err(e) => {
            return Err(vec![FieldError {
                field: "spec".into(),
                message: e.to_string(),
            }]);
        }
    };
    let pod_selector =
        label_selector_from(spec.pod_selector.as_ref(), "spec.podSelector", &mut errs);
    let (mut enforce, mut audit) = (0u32, 0u32);
    if let Some(p) = &spec.profile {
        match Level::parse(&p.level) {
            Some(level) => match mode(p.mode.as_deref(), "spec.profile.mode", &mut errs) {
                Mode::Enforce => enforce |= level.guards(),
                Mode::Audit => audit |= level.guards(),
            },
            None => errs.push(FieldError {
                field: "spec.profile.level".into(),
                message: format!(
                    "unsupported value {:?}: supported values are \"privileged\", \"baseline\", \"restricted\"",
                    p.level
                ),
            }),
        }
    }
    for (i, g) in spec.guards.iter().enumerate() {
        let Some(mut bits) = guard_by_name(&g.name) else {
            let known: Vec<&str> = GUARD_NAMES.iter().map(|(_, n)| *n).collect();
            errs.push(FieldError {
                field: format!("spec.guards[{i}].name"),
                message: format!(
                    "unknown guard {:?}: known guards are {}",
                    g.name,
                    known.join(", ")
                ),
            });
            continue;
        };
        if g.strict {
            match bits {
                GUARD_ROOT_ESCALATION => bits |= GUARD_ROOT_EXEC,
                GUARD_PTRACE => bits |= GUARD_PTRACE_ANY,
                _ => errs.push(FieldError {
                    field: format!("spec.guards[{i}].strict"),
                    message: "only root-escalation and ptrace have a strict variant".into(),
                }),
            }
        }
        match mode(
            g.mode.as_deref(),
            &format!("spec.guards[{i}].mode"),
            &mut errs,
        ) {
            Mode::Enforce => enforce |= bits,
            Mode::Audit => audit |= bits,
        }
    }
    if spec.profile.is_none() && spec.guards.is_empty() {
        errs.push(FieldError {
            field: "spec".into(),
            message: "a RuntimePolicy needs a profile or at least one guard".into(),
        });
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(RuntimePolicy {
        namespace: namespace.into(),
        name: name.into(),
        pod_selector,
        enforce,
        audit: audit & !enforce,
    })
}

/// Guard levels from a namespace's Pod Security labels: (enforce, audit). An unknown level
/// value is treated as `restricted` (fail closed) and reported.
pub fn namespace_levels(ns: &Namespace) -> (Level, Level, Vec<String>) {
    let mut warnings = Vec::new();
    let mut level = |key: &str| {
        match ns.labels.get(key) {
        None => Level::Privileged,
        Some(v) => Level::parse(v).unwrap_or_else(|| {
            warnings.push(format!(
                "Namespace {}: label {key}={v:?} is not privileged, baseline or restricted; treating it as restricted",
                ns.name
            ));
            Level::Restricted
        }),
    }
    };
    let e = level(PSA_ENFORCE);
    let a = level(PSA_AUDIT);
    (e, a, warnings)
}

/// Guard bits per local pod uid: (enforce, audit).
pub fn compile(
    cluster: &Cluster,
    policies: &BTreeMap<ObjectRef, RuntimePolicy>,
    node: &str,
) -> (BTreeMap<String, (u32, u32)>, Vec<String>) {
    let mut warnings = Vec::new();
    let mut levels = BTreeMap::new();
    for ns in cluster.namespaces.values() {
        let (e, a, w) = namespace_levels(ns);
        warnings.extend(w);
        levels.insert(ns.name.clone(), (e, a));
    }
    let mut out = BTreeMap::new();
    for pod in cluster.pods.values() {
        if pod.node_name.as_deref() != Some(node) || pod.terminal {
            continue;
        }
        let (e, a) = levels
            .get(&pod.namespace)
            .copied()
            .unwrap_or((Level::Privileged, Level::Privileged));
        let mut enforce = e.guards();
        let mut audit = a.guards();
        for p in policies.values() {
            if p.namespace == pod.namespace && p.pod_selector.matches(&pod.labels) {
                enforce |= p.enforce;
                audit |= p.audit;
            }
        }
        out.insert(pod.uid.clone(), (enforce, audit & !enforce));
    }
    (out, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Labels, Pod};
    use serde_json::json;

    fn ns(name: &str, labels: &[(&str, &str)]) -> Namespace {
        Namespace {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn pod(ns: &str, name: &str, node: &str, labels: &[(&str, &str)]) -> Pod {
        Pod {
            namespace: ns.into(),
            name: name.into(),
            uid: format!("uid-{ns}-{name}"),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Labels>(),
            node_name: Some(node.into()),
            host_network: false,
            ips: vec![],
            named_ports: vec![],
            terminal: false,
        }
    }

    fn cluster(nss: Vec<Namespace>, pods: Vec<Pod>) -> Cluster {
        let mut c = Cluster::default();
        for n in nss {
            c.namespaces.insert(n.name.clone(), n);
        }
        for p in pods {
            c.pods.insert(p.key(), p);
        }
        c
    }

    #[test]
    fn restricted_is_a_superset_of_baseline() {
        assert_eq!(RESTRICTED & BASELINE, BASELINE);
        assert_ne!(RESTRICTED, BASELINE);
        assert_eq!(BASELINE & GUARD_RAW_SOCKETS, 0);
    }

    #[test]
    fn namespace_labels_select_guard_sets() {
        let c = cluster(
            vec![
                ns("b", &[(PSA_ENFORCE, "baseline")]),
                ns("r", &[(PSA_ENFORCE, "restricted")]),
                ns("a", &[(PSA_ENFORCE, "baseline"), (PSA_AUDIT, "restricted")]),
                ns("p", &[(PSA_ENFORCE, "privileged")]),
                ns("n", &[]),
                ns("bad", &[(PSA_ENFORCE, "strict")]),
            ],
            vec![
                pod("b", "x", "n1", &[]),
                pod("r", "x", "n1", &[]),
                pod("a", "x", "n1", &[]),
                pod("p", "x", "n1", &[]),
                pod("n", "x", "n1", &[]),
                pod("bad", "x", "n1", &[]),
                pod("r", "remote", "n2", &[]),
            ],
        );
        let (g, w) = compile(&c, &BTreeMap::new(), "n1");
        assert_eq!(g["uid-b-x"], (BASELINE, 0));
        assert_eq!(g["uid-r-x"], (RESTRICTED, 0));
        assert_eq!(g["uid-a-x"], (BASELINE, RESTRICTED & !BASELINE));
        assert_eq!(g["uid-p-x"], (0, 0));
        assert_eq!(g["uid-n-x"], (0, 0));
        assert_eq!(g["uid-bad-x"], (RESTRICTED, 0));
        assert!(!g.contains_key("uid-r-remote"));
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("strict"));
    }

    #[test]
    fn runtime_policies_add_guards_to_selected_pods() {
        let rp = convert(
            "n",
            "lockdown",
            &json!({"spec": {
                "podSelector": {"matchLabels": {"app": "web"}},
                "guards": [
                    {"name": "mount"},
                    {"name": "ptrace", "mode": "Enforce", "strict": true},
                    {"name": "bpf", "mode": "Audit"},
                ]
            }}),
        )
        .unwrap();
        assert_eq!(rp.enforce, GUARD_MOUNT | GUARD_PTRACE | GUARD_PTRACE_ANY);
        assert_eq!(rp.audit, GUARD_BPF);
        let c = cluster(
            vec![ns("n", &[(PSA_AUDIT, "baseline")])],
            vec![
                pod("n", "web", "n1", &[("app", "web")]),
                pod("n", "db", "n1", &[("app", "db")]),
            ],
        );
        let mut ps = BTreeMap::new();
        ps.insert(rp.key(), rp);
        let (g, _) = compile(&c, &ps, "n1");
        let (e, a) = g["uid-n-web"];
        assert_eq!(e, GUARD_MOUNT | GUARD_PTRACE | GUARD_PTRACE_ANY);
        // Audited by the namespace label, minus what is enforced.
        assert_eq!(a, BASELINE & !e);
        assert_eq!(g["uid-n-db"], (0, BASELINE));
    }

    #[test]
    fn profile_shorthand() {
        let rp = convert(
            "n",
            "p",
            &json!({"spec": {"profile": {"level": "restricted", "mode": "Audit"}}}),
        )
        .unwrap();
        assert_eq!((rp.enforce, rp.audit), (0, RESTRICTED));
        assert!(rp.pod_selector.is_empty());
    }

    #[test]
    fn invalid_runtime_policies_name_the_field() {
        let e = convert(
            "n",
            "p",
            &json!({"spec": {"guards": [{"name": "mount", "mode": "Sometimes"}, {"name": "teleport"}, {"name": "bpf", "strict": true}]}}),
        )
        .unwrap_err();
        let fields: Vec<&str> = e.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "spec.guards[0].mode",
                "spec.guards[1].name",
                "spec.guards[2].strict"
            ]
        );
        let e = convert("n", "p", &json!({"spec": {"profile": {"level": "max"}}})).unwrap_err();
        assert_eq!(e[0].field, "spec.profile.level");
        let e = convert("n", "p", &json!({"spec": {}})).unwrap_err();
        assert_eq!(e[0].field, "spec");
        let e = convert("n", "p", &json!({"spec": {"guards": [], "extra": 1}})).unwrap_err();
        assert!(e[0].message.contains("extra"), "{e:?}");
        let e = convert(
            "n",
            "p",
            &json!({"spec": {"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}, "guards": [{"name": "bpf"}]}}),
        )
        .unwrap_err();
        assert!(e[0].field.starts_with("spec.podSelector"), "{e:?}");
    }
}
