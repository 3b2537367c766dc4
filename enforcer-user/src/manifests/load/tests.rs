//! Tests of directory loading: files, documents, Lists, kinds, errors.

use std::{
    io::{self, Write},
    sync::{Arc, Mutex},
};

use tempfile::TempDir;

use super::*;

/// A temporary directory holding `files`.
fn dir_with(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        fs::write(dir.path().join(name), content).unwrap();
    }
    dir
}

fn namespace_yaml(name: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
}

fn pod_yaml(namespace: &str, name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  \
         uid: uid-{name}\n  labels:\n    app: {name}\nspec:\n  containers:\n  - name: c\n    \
         ports:\n    - {{name: http, containerPort: 80}}\nstatus:\n  podIP: 10.0.0.1\n"
    )
}

fn policy_yaml(namespace: &str, name: &str, port: u32) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  \
         namespace: {namespace}\nspec:\n  podSelector: {{}}\n  ingress:\n  - ports:\n    - port: \
         {port}\n"
    )
}

fn id(kind: Kind, namespace: &str, name: &str) -> ObjectId {
    ObjectId {
        kind,
        namespace: namespace.into(),
        name: name.into(),
    }
}

/// (identity, file name, document) of every loaded object.
fn summary(result: &LoadResult) -> Vec<(String, String, usize)> {
    result
        .objects
        .iter()
        .map(|l| {
            let file = l.file.file_name().unwrap().to_string_lossy().into_owned();
            (l.id.to_string(), file, l.document)
        })
        .collect()
}

fn strings<const N: usize>(items: [(&str, &str, usize); N]) -> Vec<(String, String, usize)> {
    items
        .iter()
        .map(|(a, b, n)| (a.to_string(), b.to_string(), *n))
        .collect()
}

#[track_caller]
fn no_errors(result: &LoadResult) {
    assert!(result.errors.is_empty(), "{:#?}", result.errors);
    assert!(result.incomplete.is_empty(), "{:?}", result.incomplete);
}

#[test]
fn multi_document_yaml() {
    let content = format!(
        "# Leading comment\n{}---\n---\n{}--- # a marker with a comment\n{}...\n",
        namespace_yaml("x"),
        pod_yaml("x", "web"),
        policy_yaml("x", "allow", 80),
    );
    let dir = dir_with(&[("all.yaml", &content)]);
    let result = load_dir(dir.path());
    no_errors(&result);
    // The empty document (2) is skipped but counted.
    assert_eq!(
        summary(&result),
        strings([
            ("Namespace x", "all.yaml", 1),
            ("Pod x/web", "all.yaml", 3),
            ("NetworkPolicy x/allow", "all.yaml", 4),
        ])
    );
    assert!(result.objects.iter().all(|l| l.object.is_some()));
    let Some(Object::Pod(pod)) = &result.objects[1].object else {
        panic!("not a pod")
    };
    assert_eq!(pod.uid, "uid-web");
}

#[test]
fn files_are_filtered_and_sorted() {
    let dir = dir_with(&[
        ("b.yaml", &namespace_yaml("b")),
        ("a.yml", &namespace_yaml("a")),
        (
            "c.json",
            r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "c"}}"#,
        ),
        (".hidden.yaml", &namespace_yaml("hidden")),
        (".#a.yml", &namespace_yaml("lock")),
        ("a.yml~", &namespace_yaml("backup")),
        ("#a.yml#", &namespace_yaml("autosave")),
        ("a.yml.swp", "binary"),
        ("notes.txt", "not a manifest"),
        ("empty.yaml", ""),
        ("comments.yaml", "# nothing here\n\n"),
    ]);
    fs::create_dir(dir.path().join("sub.yaml")).unwrap();
    fs::write(dir.path().join("sub.yaml/d.yaml"), namespace_yaml("nested")).unwrap();
    // ConfigMap volume layout: visible links into a hidden directory.
    fs::create_dir(dir.path().join("..2024_01_01")).unwrap();
    fs::write(
        dir.path().join("..2024_01_01/linked.yaml"),
        namespace_yaml("linked"),
    )
    .unwrap();
    std::os::unix::fs::symlink("..2024_01_01", dir.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/linked.yaml", dir.path().join("linked.yaml")).unwrap();
    std::os::unix::fs::symlink("..data/gone.yaml", dir.path().join("dangling.yaml")).unwrap();

    let result = load_dir(dir.path());
    no_errors(&result);
    assert_eq!(
        summary(&result),
        strings([
            ("Namespace a", "a.yml", 1),
            ("Namespace b", "b.yaml", 1),
            ("Namespace c", "c.json", 1),
            ("Namespace linked", "linked.yaml", 1),
        ])
    );
}

#[test]
fn json_lists_and_streams() {
    let list = r#"{
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}},
            {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
             "metadata": {"name": "deny", "namespace": "x"}, "spec": {"podSelector": {}}}
        ]
    }"#;
    let stream = r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "s1"}}
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "s2"}}"#;
    let typed_list = "apiVersion: v1\nkind: PodList\nitems:\n- apiVersion: v1\n  kind: Pod\n  \
                      metadata: {name: p, namespace: x, uid: u1}\n";
    let yaml_list = format!(
        "apiVersion: v1\nkind: List\nitems:\n- {}",
        namespace_yaml("y").replace('\n', "\n  ")
    );
    let dir = dir_with(&[
        ("1-list.json", list),
        ("2-stream.json", stream),
        ("3-typed.yaml", typed_list),
        ("4-list.yaml", &yaml_list),
        (
            "5-empty-list.yaml",
            "apiVersion: v1\nkind: List\nitems: []\n",
        ),
    ]);
    let result = load_dir(dir.path());
    no_errors(&result);
    assert_eq!(
        summary(&result),
        strings([
            ("Namespace x", "1-list.json", 1),
            ("NetworkPolicy x/deny", "1-list.json", 1),
            ("Namespace s1", "2-stream.json", 1),
            ("Namespace s2", "2-stream.json", 2),
            ("Pod x/p", "3-typed.yaml", 1),
            ("Namespace y", "4-list.yaml", 1),
        ])
    );
}

/// Captures what is logged, as text.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn unknown_kinds_are_warned_about_and_ignored() {
    let content = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\n---\n{}---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cfg}}\ndata: {{a: b}}\n---\n\
         apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {{name: calico}}\n",
        namespace_yaml("x")
    );
    let dir = dir_with(&[("mixed.yaml", &content)]);
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let captured = captured.clone();
            move || captured.clone()
        })
        .with_ansi(false)
        .finish();
    let result = tracing::subscriber::with_default(subscriber, || load_dir(dir.path()));
    no_errors(&result);
    assert_eq!(
        summary(&result),
        strings([("Namespace x", "mixed.yaml", 2)])
    );
    let ignored: Vec<(&str, &str, usize)> = result
        .ignored
        .iter()
        .map(|i| (i.kind.as_str(), i.name.as_str(), i.document))
        .collect();
    assert_eq!(
        ignored,
        [
            ("Deployment", "web", 1),
            ("ConfigMap", "cfg", 3),
            ("NetworkPolicy", "calico", 4)
        ]
    );
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 3, "{log}");
    let file = dir.path().join("mixed.yaml");
    assert!(
        warnings[0].contains(&format!(
            "{} (document 1): ignoring Deployment \"web\" (apps/v1)",
            file.display()
        )),
        "{log}"
    );
}

#[test]
fn yaml_syntax_errors_lose_only_their_document() {
    let broken = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\napiVersion: v1\n\
                  kind: Pod\nmetadata:\n  name: x: y\n---\napiVersion: v1\nkind: Namespace\n\
                  metadata:\n  name: b\n";
    let dir = dir_with(&[("a.yaml", broken), ("b.yaml", &namespace_yaml("c"))]);
    let result = load_dir(dir.path());
    assert_eq!(
        summary(&result),
        strings([
            ("Namespace a", "a.yaml", 1),
            ("Namespace b", "a.yaml", 3),
            ("Namespace c", "b.yaml", 1),
        ])
    );
    assert_eq!(result.errors.len(), 1, "{:#?}", result.errors);
    let e = &result.errors[0];
    assert_eq!(e.file, dir.path().join("a.yaml"));
    assert_eq!(e.document, 2);
    assert_eq!((&e.object, &e.field), (&None, &None));
    // The line is the file's line, not the document's.
    assert!(e.message.starts_with("invalid YAML: "), "{e}");
    assert!(e.message.contains("line 9 column"), "{e}");
    assert_eq!(
        result.incomplete,
        BTreeSet::from([dir.path().join("a.yaml")])
    );
}

#[test]
fn json_syntax_errors_keep_earlier_documents() {
    let stream = "{\"apiVersion\": \"v1\", \"kind\": \"Namespace\", \"metadata\": {\"name\": \"a\"}}\n\
                  {\"apiVersion\": \"v1\",\n \"kind\": }\n";
    let dir = dir_with(&[("s.json", stream)]);
    let result = load_dir(dir.path());
    assert_eq!(summary(&result), strings([("Namespace a", "s.json", 1)]));
    assert_eq!(result.errors.len(), 1);
    let e = &result.errors[0];
    assert_eq!(e.document, 2);
    assert!(e.message.starts_with("invalid JSON: "), "{e}");
    assert!(e.message.contains("line 3"), "{e}");
    assert!(result.incomplete.contains(&dir.path().join("s.json")));
}

#[test]
fn validation_errors_name_file_document_object_and_field() {
    let content = format!(
        "{}---\n{}",
        namespace_yaml("x"),
        policy_yaml("x", "allow-foo", 70000)
    );
    let dir = dir_with(&[("x.yaml", &content)]);
    let result = load_dir(dir.path());
    assert_eq!(result.errors.len(), 1);
    assert_eq!(
        result.errors[0].to_string(),
        format!(
            "{} (document 2) NetworkPolicy x/allow-foo: spec.ingress[0].ports[0].port: must be \
             between 1 and 65535, got 70000 (enforced fail-closed: the policy isolates what it \
             selects, this rule allows nothing)",
            dir.path().join("x.yaml").display()
        )
    );
    // The invalid policy is identified and still enforced, fail-closed: it isolates the
    // pods it selects and its broken rule allows nothing.
    assert_eq!(result.objects.len(), 2);
    assert_eq!(
        result.objects[1].id,
        id(Kind::NetworkPolicy, "x", "allow-foo")
    );
    match &result.objects[1].object {
        Some(Object::NetworkPolicy(p)) => {
            assert!(p.ingress_isolation && p.ingress.is_empty());
            assert_eq!(p.errors.len(), 1);
        }
        other => panic!("not enforced fail-closed: {other:?}"),
    }
    assert!(result.incomplete.is_empty());
}

#[test]
fn decode_errors_name_the_field() {
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  uid: u1\nspec:\n  \
                containers: nope\n";
    let list = r#"{"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "q", "uid": "u2"},
         "spec": {"containers": [{"name": "c", "ports": [{"containerPort": "80"}]}]}}]}"#;
    let single = "{\n\t\"apiVersion\": \"networking.k8s.io/v1\",\n\t\"kind\": \"NetworkPolicy\",\n\t\
                  \"metadata\": {\"name\": \"r\"},\n\t\"spec\": {\"ingress\": [{\"ports\": \
                  [{\"port\": [1]}]}]}\n}\n";
    let dir = dir_with(&[("a.yaml", yaml), ("b.json", list), ("c.json", single)]);
    let result = load_dir(dir.path());
    assert_eq!(result.errors.len(), 3, "{:#?}", result.errors);
    let e = &result.errors[0];
    assert_eq!(e.object.as_deref(), Some("Pod default/p"));
    assert!(
        e.message
            .starts_with("invalid object: spec.containers: invalid type"),
        "{e}"
    );
    assert!(e.message.contains("line 7"), "{e}");
    let e = &result.errors[1];
    assert_eq!(e.object.as_deref(), Some("Pod default/q"));
    assert!(
        e.message
            .starts_with("invalid object: spec.containers[0].ports[0].containerPort: invalid type"),
        "{e}"
    );
    assert!(!e.message.contains("line"), "{e}");
    // A single JSON document (tab-indented, which YAML would not take) gets its line.
    let e = &result.errors[2];
    assert_eq!(e.object.as_deref(), Some("NetworkPolicy default/r"));
    assert!(
        e.message
            .starts_with("invalid object: spec.ingress[0].ports[0].port: invalid type: sequence"),
        "{e}"
    );
    assert!(e.message.contains(" at line 5 column "), "{e}");
    // All are identified but invalid.
    assert!(result.objects.iter().all(|l| l.object.is_none()));
    assert_eq!(result.objects.len(), 3);
}

#[test]
fn api_versions() {
    let np = |api_version: &str, name: &str| {
        policy_yaml("x", name, 80).replace(
            "apiVersion: networking.k8s.io/v1\n",
            &format!("apiVersion: {api_version}\n"),
        )
    };
    let content = [
        np("networking.k8s.io/v1beta1", "beta"),
        np("extensions/v1beta1", "legacy"),
        np("", "none").replace("apiVersion: \n", ""),
        "apiVersion: v2\nkind: Pod\nmetadata: {name: p, uid: u}\n".to_string(),
        "apiVersion: enforcer.dev/v1\nkind: RuntimePolicy\nmetadata: {name: r}\n".to_string(),
    ]
    .join("---\n");
    let dir = dir_with(&[("v.yaml", &content)]);
    let result = load_dir(dir.path());
    let errors: Vec<(usize, Option<&str>, Option<&str>, &str)> = result
        .errors
        .iter()
        .map(|e| {
            (
                e.document,
                e.object.as_deref(),
                e.field.as_deref(),
                e.message.as_str(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        [
            (
                1,
                Some("NetworkPolicy x/beta"),
                Some("apiVersion"),
                r#"unsupported value "networking.k8s.io/v1beta1" for NetworkPolicy: expected "networking.k8s.io/v1""#
            ),
            (
                2,
                Some("NetworkPolicy x/legacy"),
                Some("apiVersion"),
                r#"unsupported value "extensions/v1beta1" for NetworkPolicy: expected "networking.k8s.io/v1""#
            ),
            (
                3,
                Some("NetworkPolicy x/none"),
                Some("apiVersion"),
                "required"
            ),
            (
                4,
                Some("Pod default/p"),
                Some("apiVersion"),
                r#"unsupported value "v2" for Pod: expected "v1""#
            ),
            (
                5,
                Some("RuntimePolicy default/r"),
                Some("apiVersion"),
                r#"unsupported value "enforcer.dev/v1" for RuntimePolicy: expected "enforcer.dev/v1alpha1""#
            ),
        ]
    );
    assert_eq!(result.objects.len(), 5);
    assert!(result.objects.iter().all(|l| l.object.is_none()));
}

#[test]
fn unidentifiable_documents_make_the_file_incomplete() {
    let content = "apiVersion: v1\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Pod\n\
                   metadata: {namespace: x}\n---\nhello\n---\nkind: Namespace\nmetadata: {name: 2024}\n---\napiVersion: v1\nkind: List\nitems:\n\
                   - {apiVersion: v1, kind: Namespace, metadata: {name: ok}}\n- {apiVersion: v1}\n\
                   - 42\n";
    let dir = dir_with(&[("u.yaml", content)]);
    let result = load_dir(dir.path());
    let errors: Vec<(usize, Option<&str>, Option<&str>, &str)> = result
        .errors
        .iter()
        .map(|e| {
            (
                e.document,
                e.object.as_deref(),
                e.field.as_deref(),
                e.message.as_str(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        [
            (1, None, Some("kind"), "required"),
            (2, Some("Pod"), Some("metadata.name"), "required"),
            (
                3,
                None,
                None,
                "expected an object with apiVersion and kind, got a string"
            ),
            (
                4,
                Some("Namespace"),
                Some("metadata.name"),
                "must be a string, got a number"
            ),
            (5, None, Some("items[1].kind"), "required"),
            (
                5,
                None,
                Some("items[2]"),
                "expected an object with apiVersion and kind, got a number"
            ),
        ]
    );
    assert_eq!(summary(&result), strings([("Namespace ok", "u.yaml", 5)]));
    assert_eq!(
        result.incomplete,
        BTreeSet::from([dir.path().join("u.yaml")])
    );
}

#[test]
fn duplicates_first_definition_wins() {
    let dir = dir_with(&[
        ("a.yaml", &pod_yaml("x", "web")),
        (
            "b.yaml",
            &format!("{}---\n{}", namespace_yaml("x"), pod_yaml("x", "web")),
        ),
        (
            "c.yaml",
            &format!("{}---\n{}", namespace_yaml("y"), namespace_yaml("y")),
        ),
    ]);
    let result = load_dir(dir.path());
    assert_eq!(
        summary(&result),
        strings([
            ("Pod x/web", "a.yaml", 1),
            ("Namespace x", "b.yaml", 1),
            ("Namespace y", "c.yaml", 1),
        ])
    );
    let messages: Vec<String> = result.errors.iter().map(|e| e.to_string()).collect();
    let path = |f: &str| dir.path().join(f).display().to_string();
    assert_eq!(
        messages,
        [
            format!(
                "{} (document 2) Pod x/web: duplicate: already defined in {} (document 1); \
                 this definition is ignored",
                path("b.yaml"),
                path("a.yaml")
            ),
            format!(
                "{} (document 2) Namespace y: duplicate: already defined in {} (document 1); \
                 this definition is ignored",
                path("c.yaml"),
                path("c.yaml")
            ),
        ]
    );
}

#[test]
fn runtime_policies_are_validated_and_kept() {
    let content = "apiVersion: enforcer.dev/v1alpha1\nkind: RuntimePolicy\nmetadata:\n  name: \
                   no-raw-sockets\nspec:\n  guards: [{name: raw-sockets, mode: Enforce}]\n";
    let dir = dir_with(&[("r.yaml", content)]);
    let result = load_dir(dir.path());
    no_errors(&result);
    assert_eq!(
        result.objects[0].id,
        id(Kind::RuntimePolicy, "default", "no-raw-sockets")
    );
    let Some(Object::RuntimePolicy(rp)) = &result.objects[0].object else {
        panic!("not a RuntimePolicy")
    };
    assert_eq!(
        (rp.namespace.as_str(), rp.name.as_str()),
        ("default", "no-raw-sockets")
    );
    assert_eq!(
        rp.object,
        serde_json::json!({
            "apiVersion": "enforcer.dev/v1alpha1",
            "kind": "RuntimePolicy",
            "metadata": {"name": "no-raw-sockets"},
            "spec": {"guards": [{"name": "raw-sockets", "mode": "Enforce"}]},
        })
    );
    assert_eq!(rp.policy.enforce, enforcer_common::GUARD_RAW_SOCKETS);
    // An invalid spec is an error naming the field.
    let dir = dir_with(&[(
        "r.yaml",
        "apiVersion: enforcer.dev/v1alpha1\nkind: RuntimePolicy\nmetadata: {name: r}\nspec:\n  \
         guards: [{name: telepathy}]\n",
    )]);
    let result = load_dir(dir.path());
    assert_eq!(result.errors.len(), 1, "{:?}", result.errors);
    assert_eq!(
        result.errors[0].field.as_deref(),
        Some("spec.guards[0].name")
    );
}

#[test]
fn yaml_merge_keys_are_applied() {
    let content = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: m\n  labels:\n    \
                   <<: {team: shop, tier: web}\n    tier: api\n";
    let dir = dir_with(&[("m.yaml", content)]);
    let result = load_dir(dir.path());
    no_errors(&result);
    let Some(Object::Namespace(ns)) = &result.objects[0].object else {
        panic!("not a Namespace")
    };
    assert_eq!(ns.labels["team"], "shop");
    assert_eq!(ns.labels["tier"], "api");
}

#[test]
fn unreadable_content() {
    let dir = dir_with(&[("bin.yaml", ""), ("ok.yaml", &namespace_yaml("ok"))]);
    fs::write(dir.path().join("bin.yaml"), [0xff, 0xfe, 0x00]).unwrap();
    let result = load_dir(dir.path());
    assert_eq!(summary(&result), strings([("Namespace ok", "ok.yaml", 1)]));
    assert_eq!(result.errors.len(), 1);
    assert_eq!(result.errors[0].document, 0);
    assert_eq!(result.errors[0].message, "not UTF-8 text");
    assert_eq!(
        result.incomplete,
        BTreeSet::from([dir.path().join("bin.yaml")])
    );

    let missing = dir.path().join("missing");
    let result = load_dir(&missing);
    assert!(result.dir_unreadable);
    assert_eq!(result.errors.len(), 1);
    assert_eq!(result.errors[0].file, missing);
    assert!(
        result.errors[0]
            .message
            .starts_with("cannot list the manifests directory")
    );
}

#[test]
fn document_splitting() {
    let text = "%YAML 1.2\n---\na: 1\n---foo: 2\n--- # c\nb: 3\r\n---\r\n---\tc: 4\n  ---\n";
    let docs = split_documents(text);
    assert_eq!(
        docs,
        vec![
            YamlDoc {
                first_line: 1,
                text: "---\na: 1\n---foo: 2\n"
            },
            YamlDoc {
                first_line: 4,
                text: "--- # c\nb: 3\r\n"
            },
            YamlDoc {
                first_line: 6,
                text: "---\r\n"
            },
            YamlDoc {
                first_line: 7,
                text: "---\tc: 4\n  ---\n"
            },
        ]
    );
    assert_eq!(
        split_documents("a: 1\n"),
        vec![YamlDoc {
            first_line: 0,
            text: "a: 1\n"
        }]
    );
    assert!(split_documents("# only a comment\n").is_empty());
}

/// `# expect:` and `# object:` of a corpus case (in the file, or in `<file>.expect` for
/// JSON, which has no comments).
fn corpus_expectation(path: &Path) -> (String, Option<String>) {
    let text = fs::read(path.with_extension(format!(
        "{}.expect",
        path.extension().unwrap().to_string_lossy()
    )))
    .or_else(|_| fs::read(path))
    .unwrap();
    let text = String::from_utf8_lossy(&text);
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
    };
    let expect = field("# expect:").unwrap_or_else(|| panic!("{}: no # expect:", path.display()));
    let object = field("# object:").unwrap_or_else(|| panic!("{}: no # object:", path.display()));
    (expect, (object != "none").then_some(object))
}

/// The hostile corpus (tests/corpus/manifests/README.md), loaded together with valid
/// manifests as the agent loads a directory: each case is rejected with its expected error,
/// naming its file, its object and the field, and every valid object is kept.
#[test]
fn the_hostile_corpus_is_rejected_case_by_case() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/manifests");
    let dir = dir_with(&[(
        "00-valid.yaml",
        &format!(
            "{}---\n{}---\n{}",
            namespace_yaml("x"),
            pod_yaml("x", "a"),
            policy_yaml("x", "allow-80", 80)
        ),
    )]);
    let mut cases = Vec::new();
    for e in fs::read_dir(&corpus).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") || name.ends_with(".json") {
            fs::copy(e.path(), dir.path().join(&name)).unwrap();
            cases.push((name, corpus_expectation(&e.path())));
        }
    }
    assert!(
        cases.len() >= 25,
        "the corpus shrank: {} cases",
        cases.len()
    );
    let result = load_dir(dir.path());
    let mut wrong = Vec::new();
    for (name, (expect, object)) in &cases {
        let errors: Vec<&ManifestError> = result
            .errors
            .iter()
            .filter(|e| e.file.file_name().unwrap().to_string_lossy() == name.as_str())
            .collect();
        if !errors.iter().any(|e| {
            e.to_string().contains(expect.as_str()) && (object.is_none() || e.object == *object)
        }) {
            wrong.push(format!(
                "{name}: expected an error naming {object:?} with {expect:?}, got {}",
                errors
                    .iter()
                    .map(|e| format!("\n    {e}"))
                    .collect::<String>()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        result
            .errors
            .iter()
            .all(|e| !e.file.ends_with("00-valid.yaml")),
        "{:#?}",
        result.errors
    );
    for (kind, ns, name) in [
        (Kind::Namespace, "", "x"),
        (Kind::Pod, "x", "a"),
        (Kind::NetworkPolicy, "x", "allow-80"),
    ] {
        assert!(
            result
                .objects
                .iter()
                .any(|l| l.id == id(kind, ns, name) && l.object.is_some()),
            "{kind:?} {ns}/{name} lost"
        );
    }
}

/// Inputs built to exhaust the loader: each is refused with an error naming the file (and
/// document), quickly and without holding more than a bounded amount of memory, and the
/// valid manifest next to them is kept.
#[test]
fn huge_deep_and_self_multiplying_inputs_are_refused() {
    let mut huge_doc =
        String::from("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: huge\n  annotations:\n");
    let mut i = 0;
    while huge_doc.len() <= (4 << 20) + 10 {
        huge_doc.push_str(&format!("    a{i}: \"{}\"\n", "x".repeat(200)));
        i += 1;
    }
    // Nine levels of nine aliases: 9^9 (387 million) nodes once expanded.
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
    for l in 1..10 {
        let p = l - 1;
        bomb.push_str(&format!(
            "a{l}: &a{l} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let deep_yaml = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: deep, labels: {}x{}}}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let deep_json = format!(
        "{{\"apiVersion\": \"v1\", \"kind\": \"Namespace\", \"metadata\": {{\"name\": \"deepj\", \
         \"labels\": {}1{}}}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let dir = dir_with(&[
        ("00-valid.yaml", &namespace_yaml("x")),
        ("huge-doc.yaml", &huge_doc),
        ("bomb.yaml", &bomb),
        ("deep.yaml", &deep_yaml),
        ("deep.json", &deep_json),
    ]);
    // Over the file limit: written sparse, so the test itself stays small on disk.
    let big = fs::File::create(dir.path().join("huge-file.yaml")).unwrap();
    big.set_len(65 << 20).unwrap();
    let start = std::time::Instant::now();
    let result = load_dir(dir.path());
    assert!(
        start.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    let error_of = |file: &str| {
        result
            .errors
            .iter()
            .filter(|e| e.file.file_name().unwrap() == file)
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    for (file, says) in [
        ("huge-file.yaml", "larger than 64 MiB: not read"),
        ("huge-doc.yaml", "(document 1): document of"),
        ("bomb.yaml", "invalid YAML"),
        (
            "deep.yaml",
            "invalid YAML: nested more than 256 levels deep at line 3",
        ),
        ("deep.json", "invalid JSON"),
    ] {
        let e = error_of(file);
        assert!(e.contains(says), "{file}: {e:?}");
    }
    assert!(
        result
            .objects
            .iter()
            .any(|l| l.id == id(Kind::Namespace, "", "x") && l.object.is_some())
    );
}

/// A field the schema does not know fails closed where it is (a misspelt `from` must not
/// leave a rule that allows every peer), and is reported.
#[test]
fn unknown_fields_in_a_network_policy_fail_closed_where_they_are() {
    let rule = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: r, \
                namespace: x}\nspec:\n  podSelector: {matchLabels: {app: a}}\n  ingress:\n  \
                - fromm: [{podSelector: {}}]\n    ports: [{port: 80}]\n  - from: \
                [{podSelector: {matchLabels: {app: b}}}]\n";
    let spec = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: s, \
                namespace: x}\nspec:\n  podSelector: {matchLabels: {app: a}}\n  \
                policyType: [Egress]\n";
    let meta = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: m, \
                namespace: x, label: {a: b}}\nspec:\n  podSelector: {}\n  ingress: [{}]\n\
                status: {}\n";
    let dir = dir_with(&[("r.yaml", rule), ("s.yaml", spec), ("m.yaml", meta)]);
    let result = load_dir(dir.path());
    let policy = |name: &str| match &result
        .objects
        .iter()
        .find(|l| l.id == id(Kind::NetworkPolicy, "x", name))
        .unwrap()
        .object
    {
        Some(Object::NetworkPolicy(p)) => p.clone(),
        other => panic!("{name}: {other:?}"),
    };
    // The rule with the unknown field allows nothing; the other rule stays.
    let r = policy("r");
    assert!(r.ingress_isolation && !r.egress_isolation);
    assert_eq!(r.ingress.len(), 1);
    assert_eq!(r.ingress[0].peers.len(), 1);
    // A misspelt policyTypes: both directions isolated, nothing allowed.
    let s = policy("s");
    assert!(s.ingress_isolation && s.egress_isolation);
    assert!(s.ingress.is_empty() && s.egress.is_empty());
    // In metadata: reported, the policy as written (status: {} carries nothing).
    let m = policy("m");
    assert_eq!(m.ingress.len(), 1);
    let fields: Vec<_> = result
        .errors
        .iter()
        .map(|e| (e.object.clone().unwrap(), e.field.clone().unwrap()))
        .collect();
    assert_eq!(
        fields,
        [
            (
                "NetworkPolicy x/m".to_string(),
                "metadata.label".to_string()
            ),
            ("NetworkPolicy x/r".into(), "spec.ingress[0].fromm".into()),
            ("NetworkPolicy x/s".into(), "spec.policyType".into()),
        ]
    );
}

#[test]
fn flow_depth_skips_quotes_and_comments() {
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    assert_eq!(flow_deeper_than(&deep(3), 3), None);
    assert_eq!(
        flow_deeper_than(&format!("a: 1\nb: {}", deep(4)), 3),
        Some(2)
    );
    for text in [
        format!("a: \"{}\"", "[".repeat(10)),
        format!("a: '{}''{}'", "[".repeat(10), "{".repeat(10)),
        format!("a: b # {}", "[".repeat(10)),
        format!("a: \"x\\\"{}\"", "[".repeat(10)),
    ] {
        assert_eq!(flow_deeper_than(&text, 3), None, "{text}");
    }
    // A quote inside a word is not a quoted scalar.
    assert_eq!(
        flow_deeper_than(&format!("a: it's {}", deep(4)), 3),
        Some(1)
    );
}
