//! Tests of the last-known-good rules across reloads.

use std::fs;

use tempfile::TempDir;

use super::*;
use crate::manifests::Kind;
use crate::model::{Port, Protocol};

fn namespace_yaml(name: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
}

fn pod_yaml(namespace: &str, name: &str, app: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  \
         uid: uid-{name}\n  labels: {{app: {app}}}\nstatus: {{podIP: 10.0.0.1}}\n"
    )
}

fn policy_yaml(namespace: &str, name: &str, port: u32) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  \
         namespace: {namespace}\nspec:\n  podSelector: {{}}\n  ingress:\n  - ports:\n    - port: \
         {port}\n"
    )
}

fn runtime_yaml(name: &str, mode: &str) -> String {
    format!(
        "apiVersion: enforcer.dev/v1alpha1\nkind: RuntimePolicy\nmetadata:\n  name: {name}\n  \
         namespace: x\nspec:\n  guards:\n  - {{name: mount, mode: {mode}}}\n"
    )
}

fn key(namespace: &str, name: &str) -> ObjectRef {
    ObjectRef {
        namespace: namespace.into(),
        name: name.into(),
    }
}

fn id(kind: Kind, namespace: &str, name: &str) -> ObjectId {
    ObjectId {
        kind,
        namespace: namespace.into(),
        name: name.into(),
    }
}

/// The port of the single ingress rule of policy `x/p`.
fn enforced_port(store: &Store) -> Option<Port> {
    let np = store.cluster().network_policies.get(&key("x", "p"))?;
    np.ingress.first()?.ports.first()?.port.clone()
}

/// The policy x/p is held fail-closed: isolating ingress, with no rule and its errors.
fn fail_closed(store: &Store) -> bool {
    let np = &store.cluster().network_policies[&key("x", "p")];
    np.ingress_isolation && np.ingress.is_empty() && !np.errors.is_empty()
}

struct Dir(TempDir);

impl Dir {
    fn new() -> Self {
        Dir(tempfile::tempdir().unwrap())
    }
    fn write(&self, name: &str, content: &str) {
        fs::write(self.0.path().join(name), content).unwrap();
    }
    fn remove(&self, name: &str) {
        fs::remove_file(self.0.path().join(name)).unwrap();
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
}

#[test]
fn builds_the_cluster() {
    let dir = Dir::new();
    dir.write(
        "all.yaml",
        &[
            namespace_yaml("x"),
            pod_yaml("x", "web", "web"),
            policy_yaml("x", "p", 80),
            runtime_yaml("r", "Enforce"),
        ]
        .join("---\n"),
    );
    let mut store = Store::new();
    let report = store.reload(dir.path());
    assert!(report.errors.is_empty(), "{:#?}", report.errors);
    assert!(report.changed && report.runtime_changed);
    assert!(report.kept.is_empty());
    let cluster = store.cluster();
    assert_eq!(cluster.namespaces.keys().collect::<Vec<_>>(), ["x"]);
    assert_eq!(cluster.pods[&key("x", "web")].labels["app"], "web");
    assert_eq!(enforced_port(&store), Some(Port::Number(80)));
    assert_eq!(
        cluster.network_policies[&key("x", "p")].ingress[0].ports[0].protocol,
        Protocol::Tcp
    );
    assert_eq!(
        store.runtime_policies()[&key("x", "r")].policy.enforce,
        enforcer_common::GUARD_MOUNT
    );

    // Nothing changed: nothing to recompile.
    let report = store.reload(dir.path());
    assert!(!report.changed && !report.runtime_changed);
}

#[test]
fn an_invalid_network_policy_is_enforced_fail_closed() {
    let dir = Dir::new();
    dir.write("ns.yaml", &namespace_yaml("x"));
    dir.write("p.yaml", &policy_yaml("x", "p", 80));
    let mut store = Store::new();
    assert!(store.reload(dir.path()).changed);
    assert_eq!(enforced_port(&store), Some(Port::Number(80)));

    // valid -> invalid: the policy as written, its broken rule allowing nothing (not the
    // old version, which may allow what the edit meant to remove); the error is reported.
    dir.write("p.yaml", &policy_yaml("x", "p", 70000));
    let report = store.reload(dir.path());
    assert_eq!(report.errors.len(), 1);
    assert_eq!(
        report.errors[0].field.as_deref(),
        Some("spec.ingress[0].ports[0].port")
    );
    assert!(report.kept.is_empty());
    assert!(report.changed);
    assert!(fail_closed(&store));

    // Still invalid: nothing changes.
    assert!(!store.reload(dir.path()).changed);

    // invalid -> valid: the new version.
    dir.write("p.yaml", &policy_yaml("x", "p", 81));
    let report = store.reload(dir.path());
    assert!(report.errors.is_empty() && report.kept.is_empty());
    assert!(report.changed);
    assert_eq!(enforced_port(&store), Some(Port::Number(81)));

    // invalid, then deleted: removed.
    dir.write("p.yaml", &policy_yaml("x", "p", 0));
    assert!(store.reload(dir.path()).changed);
    dir.remove("p.yaml");
    let report = store.reload(dir.path());
    assert!(report.errors.is_empty());
    assert!(report.changed);
    assert!(store.cluster().network_policies.is_empty());
    assert!(store.cluster().namespaces.contains_key("x"));
}

#[test]
fn a_network_policy_never_valid_still_isolates() {
    let dir = Dir::new();
    dir.write("p.yaml", &policy_yaml("x", "p", 0));
    let mut store = Store::new();
    let report = store.reload(dir.path());
    assert_eq!(report.errors.len(), 1);
    assert!(report.kept.is_empty());
    assert!(report.changed);
    assert!(fail_closed(&store));
}

#[test]
fn disappeared_objects_are_removed() {
    let dir = Dir::new();
    dir.write(
        "pods.yaml",
        &format!(
            "{}---\n{}",
            pod_yaml("x", "a", "a"),
            pod_yaml("x", "b", "b")
        ),
    );
    let mut store = Store::new();
    store.reload(dir.path());
    assert_eq!(store.cluster().pods.len(), 2);
    dir.write("pods.yaml", &pod_yaml("x", "a", "a"));
    let report = store.reload(dir.path());
    assert!(report.changed);
    assert_eq!(
        store.cluster().pods.keys().cloned().collect::<Vec<_>>(),
        [key("x", "a")]
    );
}

#[test]
fn objects_of_a_broken_file_are_kept_until_it_is_readable() {
    let dir = Dir::new();
    dir.write(
        "a.yaml",
        &format!("{}---\n{}", namespace_yaml("x"), policy_yaml("x", "p", 80)),
    );
    dir.write("b.yaml", &pod_yaml("x", "web", "web"));
    let mut store = Store::new();
    store.reload(dir.path());

    // A syntax error hides the policy's identity: keep it rather than open enforcement.
    dir.write(
        "a.yaml",
        &format!(
            "{}---\nkind: NetworkPolicy\n  bad: [indent\n",
            namespace_yaml("x")
        ),
    );
    // An object gone from a readable file is still removed.
    dir.remove("b.yaml");
    let report = store.reload(dir.path());
    assert_eq!(report.errors.len(), 1, "{:#?}", report.errors);
    assert!(report.errors[0].message.starts_with("invalid YAML"));
    assert_eq!(report.kept, [id(Kind::NetworkPolicy, "x", "p")]);
    assert!(report.changed);
    assert!(store.cluster().pods.is_empty());
    assert_eq!(enforced_port(&store), Some(Port::Number(80)));

    // Readable again, without the policy: removed.
    dir.write("a.yaml", &namespace_yaml("x"));
    let report = store.reload(dir.path());
    assert!(report.errors.is_empty() && report.kept.is_empty());
    assert!(report.changed);
    assert_eq!(enforced_port(&store), None);
}

#[test]
fn an_unreadable_directory_keeps_everything() {
    let dir = Dir::new();
    let manifests = dir.path().join("m");
    fs::create_dir(&manifests).unwrap();
    fs::write(manifests.join("p.yaml"), policy_yaml("x", "p", 80)).unwrap();
    let mut store = Store::new();
    store.reload(&manifests);
    fs::rename(&manifests, dir.path().join("elsewhere")).unwrap();
    let report = store.reload(&manifests);
    assert_eq!(report.errors.len(), 1);
    assert!(!report.changed);
    assert_eq!(report.kept, [id(Kind::NetworkPolicy, "x", "p")]);
    assert_eq!(enforced_port(&store), Some(Port::Number(80)));
}

#[test]
fn moving_an_object_between_files_changes_nothing() {
    let dir = Dir::new();
    dir.write("a.yaml", &policy_yaml("x", "p", 80));
    let mut store = Store::new();
    store.reload(dir.path());
    dir.remove("a.yaml");
    dir.write("b.yaml", &policy_yaml("x", "p", 80));
    let report = store.reload(dir.path());
    assert!(!report.changed && report.errors.is_empty());
    assert_eq!(enforced_port(&store), Some(Port::Number(80)));
}

#[test]
fn duplicates_first_file_wins() {
    let dir = Dir::new();
    dir.write("a.yaml", &pod_yaml("x", "web", "from-a"));
    dir.write("b.yaml", &pod_yaml("x", "web", "from-b"));
    let mut store = Store::new();
    let report = store.reload(dir.path());
    assert_eq!(report.errors.len(), 1);
    assert_eq!(report.errors[0].file, dir.path().join("b.yaml"));
    assert!(report.errors[0].message.starts_with("duplicate"));
    assert_eq!(
        store.cluster().pods[&key("x", "web")].labels["app"],
        "from-a"
    );

    // The first definition gone, the other one is the only one.
    dir.remove("a.yaml");
    let report = store.reload(dir.path());
    assert!(report.errors.is_empty() && report.changed);
    assert_eq!(
        store.cluster().pods[&key("x", "web")].labels["app"],
        "from-b"
    );
}

#[test]
fn an_invalid_first_duplicate_still_owns_the_identity() {
    let dir = Dir::new();
    dir.write("a.yaml", &policy_yaml("x", "p", 80));
    let mut store = Store::new();
    store.reload(dir.path());
    // The first definition (by file name) is invalid, a later duplicate is valid: the
    // first still owns the identity.
    dir.write("a.yaml", &policy_yaml("x", "p", 0));
    dir.write("b.yaml", &policy_yaml("x", "p", 90));
    let report = store.reload(dir.path());
    assert_eq!(report.errors.len(), 2);
    // A NetworkPolicy is enforced fail-closed as the first definition says.
    assert!(report.kept.is_empty());
    assert!(fail_closed(&store));
}

#[test]
fn runtime_policy_changes_are_reported_separately() {
    let dir = Dir::new();
    dir.write("ns.yaml", &namespace_yaml("x"));
    dir.write("r.yaml", &runtime_yaml("r", "Audit"));
    let mut store = Store::new();
    store.reload(dir.path());
    dir.write("r.yaml", &runtime_yaml("r", "Enforce"));
    let report = store.reload(dir.path());
    assert!(!report.changed);
    assert!(report.runtime_changed);
    assert_eq!(
        store.runtime_policies()[&key("x", "r")].policy.enforce,
        enforcer_common::GUARD_MOUNT
    );
}

#[test]
fn unchanged_files_are_reused_and_edits_in_place_are_seen() {
    let dir = Dir::new();
    dir.write("ns.yaml", &namespace_yaml("x"));
    dir.write("p.yaml", &policy_yaml("x", "p", 80));
    let mut store = Store::new();
    store.reload(dir.path());
    assert_eq!(enforced_port(&store), Some(Port::Number(80)));
    assert!(!store.reload(dir.path()).changed);
    // Same size, same inode, new content: the stamp (mtime/ctime) still changes.
    std::fs::write(dir.path().join("p.yaml"), policy_yaml("x", "p", 81)).unwrap();
    let report = store.reload(dir.path());
    assert!(report.changed);
    assert_eq!(enforced_port(&store), Some(Port::Number(81)));
    // A removed file is dropped from the cache and from the cluster.
    std::fs::remove_file(dir.path().join("p.yaml")).unwrap();
    assert!(store.reload(dir.path()).changed);
    assert!(store.cluster().network_policies.is_empty());
}
