//! Reading a manifests directory: files, documents, objects, errors.
//!
//! Every file is split into documents and every document into objects (a `List` holds
//! several) independently, so that one broken document only loses itself. Objects are
//! identified (kind, namespace, name) before they are validated: an identified but invalid
//! object lets the [`super::Store`] keep its previous version.

use std::{
    collections::{BTreeSet, HashMap},
    ffi::OsStr,
    fs, io,
    path::{Path, PathBuf},
};

use k8s_openapi::api::{core::v1 as core, networking::v1 as net};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use super::{
    Kind, ManifestError, Object, ObjectId, RuntimePolicy,
    convert::{self, DEFAULT_NAMESPACE, FieldError},
    names,
};

/// Everything read from a manifests directory.
#[derive(Clone, Debug, Default)]
pub struct LoadResult {
    /// Every identified object of a supported kind, in file-name then document order. Each
    /// identity appears once: later duplicates are reported in `errors` and dropped.
    pub objects: Vec<Loaded>,
    pub errors: Vec<ManifestError>,
    /// Objects of kinds the agent does not read (each also logged as a warning).
    pub ignored: Vec<Ignored>,
    /// Files with content that could not be attributed to an object identity (unreadable
    /// file, syntax error, document without kind or name): whatever they held before may
    /// still be there.
    pub incomplete: BTreeSet<PathBuf>,
    /// The directory could not be listed: nothing is known about its content.
    pub dir_unreadable: bool,
}

/// One identified object of a supported kind.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    pub id: ObjectId,
    pub file: PathBuf,
    /// 1-based index of the document in the file.
    pub document: usize,
    /// The converted object; None when it is invalid (its errors are in
    /// [`LoadResult::errors`]).
    pub object: Option<Object>,
}

/// An object of a kind the agent does not read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ignored {
    pub api_version: String,
    pub kind: String,
    /// metadata.name, empty when missing.
    pub name: String,
    pub file: PathBuf,
    pub document: usize,
}

/// Loads every manifest of `dir`: `*.yaml`, `*.yml` and `*.json`, in file-name order, not
/// recursively. Hidden files (including editor lock files `.#x.yaml` and Kubernetes volume
/// internals such as `..data`) and backup files (`x.yaml~`, `#x.yaml#`) are skipped;
/// symbolic links are followed.
///
/// YAML files may hold several documents separated by `---`; JSON files one or more
/// concatenated values. A document may be a single object or a `List` (`kind: List` or
/// `kind: <Kind>List` with `items`). Empty documents are skipped.
pub fn load_dir(dir: &Path) -> LoadResult {
    load_dir_cached(dir, &mut FileCache::default())
}

/// Loads the content of one manifest file named `name` (`.json` is read as JSON, anything
/// else as YAML), as [`load_dir`] loads each file. For the fuzz targets and tools that
/// hold manifests in memory.
pub fn load_bytes(name: &str, bytes: Vec<u8>) -> LoadResult {
    let mut loader = Loader::default();
    loader.content(Path::new(name), bytes);
    loader.result
}

/// Per-file results of earlier loads, reused while a file is unchanged (same device, inode,
/// size, modification and change times), so that a change to one file of a large directory
/// re-reads only that file.
#[derive(Debug, Default)]
pub struct FileCache {
    files: HashMap<PathBuf, (Stamp, LoadResult)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

/// [`load_dir`], reusing `cache` for files that did not change since the last call.
pub fn load_dir_cached(dir: &Path, cache: &mut FileCache) -> LoadResult {
    let mut out = LoadResult::default();
    let files = match manifest_files(dir) {
        Ok(files) => files,
        Err(e) => {
            out.dir_unreadable = true;
            out.errors.push(ManifestError {
                file: dir.to_path_buf(),
                document: 0,
                object: None,
                field: None,
                message: format!("cannot list the manifests directory: {e}"),
            });
            return out;
        }
    };
    let mut seen: HashMap<ObjectId, (PathBuf, usize)> = HashMap::new();
    let mut present = std::collections::HashSet::new();
    for file in files {
        let st = stamp(&file);
        let per_file = match (st, cache.files.get(&file)) {
            (Some(now), Some((then, cached))) if now == *then => cached.clone(),
            _ => {
                let mut loader = Loader::default();
                loader.file(&file);
                // A file that changed while being read gets a new stamp: read it again
                // next time rather than trusting a torn read.
                match st {
                    Some(before) if Some(before) == stamp(&file) => {
                        cache
                            .files
                            .insert(file.clone(), (before, loader.result.clone()));
                    }
                    _ => {
                        cache.files.remove(&file);
                    }
                }
                loader.result
            }
        };
        present.insert(file);
        // Identities are unique across files: the first definition (by file name) wins.
        for loaded in per_file.objects {
            if let Some((f, d)) = seen.get(&loaded.id) {
                out.errors.push(ManifestError {
                    file: loaded.file.clone(),
                    document: loaded.document,
                    object: Some(loaded.id.to_string()),
                    field: None,
                    message: format!(
                        "duplicate: already defined in {} (document {d}); this definition is \
                         ignored",
                        f.display()
                    ),
                });
                continue;
            }
            seen.insert(loaded.id.clone(), (loaded.file.clone(), loaded.document));
            out.objects.push(loaded);
        }
        out.errors.extend(per_file.errors);
        out.ignored.extend(per_file.ignored);
        out.incomplete.extend(per_file.incomplete);
    }
    cache.files.retain(|f, _| present.contains(f));
    out
}

fn is_manifest_name(name: &OsStr) -> bool {
    let name = name.to_string_lossy();
    if name.starts_with('.') || name.starts_with('#') || name.ends_with('~') {
        return false;
    }
    [".yaml", ".yml", ".json"]
        .iter()
        .any(|ext| name.len() > ext.len() && name.ends_with(ext))
}

/// The manifest files of `dir`, sorted by name.
fn manifest_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if !is_manifest_name(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        // Follow links: ConfigMap volumes link every file into a hidden timestamped dir.
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => files.push(path),
            Ok(_) => tracing::debug!("{}: not a regular file, skipped", path.display()),
            // Removed since the listing, or a dangling link: the file is not there.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // Reported when the file is read.
            Err(_) => files.push(path),
        }
    }
    files.sort();
    Ok(files)
}

/// Where an object comes from.
#[derive(Clone, Copy)]
struct Doc<'a> {
    file: &'a Path,
    /// 1-based.
    document: usize,
}

/// Accumulates the result of a load.
#[derive(Default)]
struct Loader {
    result: LoadResult,
    /// Where each identity was first defined.
    seen: HashMap<ObjectId, (PathBuf, usize)>,
}

impl Loader {
    fn error(
        &mut self,
        doc: Doc<'_>,
        object: Option<String>,
        field: Option<String>,
        message: impl Into<String>,
    ) {
        self.result.errors.push(ManifestError {
            file: doc.file.to_path_buf(),
            document: doc.document,
            object,
            field,
            message: message.into(),
        });
    }

    /// An error that leaves part of the file's content unattributed to any identity.
    fn unattributed(
        &mut self,
        doc: Doc<'_>,
        object: Option<String>,
        field: Option<String>,
        message: impl Into<String>,
    ) {
        self.error(doc, object, field, message);
        self.result.incomplete.insert(doc.file.to_path_buf());
    }

    fn file(&mut self, path: &Path) {
        let whole = Doc {
            file: path,
            document: 0,
        };
        let bytes = match read_bounded(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => return self.unattributed(whole, None, None, format!("cannot read: {e}")),
        };
        self.content(path, bytes);
    }

    /// The content of a file (`path` names it in errors and tells JSON from YAML).
    fn content(&mut self, path: &Path, bytes: Vec<u8>) {
        let whole = Doc {
            file: path,
            document: 0,
        };
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return self.unattributed(
                whole,
                None,
                None,
                format!(
                    "larger than {} MiB: not read (split it into several files)",
                    MAX_FILE_BYTES >> 20
                ),
            );
        }
        let Ok(text) = String::from_utf8(bytes) else {
            return self.unattributed(whole, None, None, "not UTF-8 text");
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        if path.extension() == Some(OsStr::new("json")) {
            self.json(path, text);
        } else {
            self.yaml(path, text);
        }
    }

    fn yaml(&mut self, path: &Path, text: &str) {
        for (i, part) in split_documents(text).into_iter().enumerate() {
            let doc = Doc {
                file: path,
                document: i + 1,
            };
            if part.text.len() > MAX_DOCUMENT_BYTES {
                let message = format!(
                    "document of {} bytes, over the limit of {} MiB (the API server's \
                     request limit is 3 MiB)",
                    part.text.len(),
                    MAX_DOCUMENT_BYTES >> 20
                );
                self.unattributed(doc, None, None, message);
                continue;
            }
            if let Some(line) = flow_deeper_than(part.text, MAX_FLOW_DEPTH) {
                let message = format!(
                    "invalid YAML: nested more than {MAX_FLOW_DEPTH} levels deep at line {}",
                    part.first_line + line
                );
                self.unattributed(doc, None, None, message);
                continue;
            }
            // Pad with the lines before the document so that errors carry the file's line
            // numbers.
            let padded = format!("{}{}", "\n".repeat(part.first_line), part.text);
            match parse_yaml(&padded) {
                Ok(value) => self.document(doc, &value, Some(Text::Yaml(&padded))),
                Err(message) => self.unattributed(doc, None, None, message),
            }
        }
    }

    fn json(&mut self, path: &Path, text: &str) {
        let mut values = Vec::new();
        let mut syntax_error = None;
        let mut too_large = None;
        let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        let mut start = 0;
        while let Some(value) = stream.next() {
            match value {
                Ok(value) => values.push(value),
                Err(e) => {
                    syntax_error = Some(e);
                    break;
                }
            }
            let end = stream.byte_offset();
            if end - start > MAX_DOCUMENT_BYTES {
                too_large.get_or_insert((values.len(), end - start));
            }
            start = end;
        }
        // The file's text locates decoding errors only when it is a single document.
        let text = (values.len() == 1 && syntax_error.is_none()).then_some(Text::Json(text));
        for (i, value) in values.iter().enumerate() {
            let doc = Doc {
                file: path,
                document: i + 1,
            };
            if let Some((n, size)) = too_large
                && n == i + 1
            {
                let message = format!(
                    "document of {size} bytes, over the limit of {} MiB (the API server's \
                     request limit is 3 MiB)",
                    MAX_DOCUMENT_BYTES >> 20
                );
                self.unattributed(doc, None, None, message);
                continue;
            }
            self.document(doc, value, text);
        }
        if let Some(e) = syntax_error {
            let doc = Doc {
                file: path,
                document: values.len() + 1,
            };
            self.unattributed(doc, None, None, format!("invalid JSON: {e}"));
        }
    }

    /// One document; `text` is its source when that holds exactly this document (used to
    /// locate decoding errors).
    fn document(&mut self, doc: Doc<'_>, value: &Value, text: Option<Text<'_>>) {
        if !value.is_null() {
            self.object(doc, value, "", text);
        }
    }

    /// One object, or a List of them. `prefix` is the path of the object in its document
    /// (`items[3].` in a List), used for errors that cannot name the object.
    fn object(&mut self, doc: Doc<'_>, value: &Value, prefix: &str, text: Option<Text<'_>>) {
        let at = |field: &str| Some(format!("{prefix}{field}"));
        let Some(obj) = value.as_object() else {
            let field = prefix.strip_suffix('.').map(str::to_string);
            let message = format!(
                "expected an object with apiVersion and kind, got {}",
                type_name(value)
            );
            return self.unattributed(doc, None, field, message);
        };
        let kind = match obj.get("kind") {
            Some(Value::String(kind)) if !kind.is_empty() => kind.as_str(),
            _ => return self.unattributed(doc, None, at("kind"), "required"),
        };
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let metadata = |key: &str| {
            obj.get("metadata")
                .and_then(|m| m.get(key))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };

        if kind == "List" || (kind.ends_with("List") && obj.contains_key("items")) {
            match obj.get("items") {
                Some(Value::Array(items)) => {
                    for (i, item) in items.iter().enumerate() {
                        self.object(doc, item, &format!("{prefix}items[{i}]."), None);
                    }
                }
                None | Some(Value::Null) => {}
                Some(_) => self.unattributed(doc, None, at("items"), "must be a list of objects"),
            }
            return;
        }

        let Some(kind) = Kind::from_name(kind).filter(|k| claims(*k, api_version)) else {
            let name = metadata("name").unwrap_or_default();
            tracing::warn!(
                "{} (document {}): ignoring {kind} {name:?} ({api_version}): not a kind \
                 enforcer reads from manifests",
                doc.file.display(),
                doc.document,
            );
            self.result.ignored.push(Ignored {
                api_version: api_version.to_string(),
                kind: kind.to_string(),
                name: name.to_string(),
                file: doc.file.to_path_buf(),
                document: doc.document,
            });
            return;
        };
        let Some(name) = metadata("name") else {
            let given = obj.get("metadata").and_then(|m| m.get("name"));
            let message = match given {
                Some(v) if !v.is_null() && !v.is_string() => {
                    format!("must be a string, got {}", type_name(v))
                }
                _ => "required".to_string(),
            };
            return self.unattributed(doc, Some(kind.to_string()), at("metadata.name"), message);
        };
        let namespace = if kind.namespaced() {
            metadata("namespace").unwrap_or(DEFAULT_NAMESPACE)
        } else {
            ""
        };
        let id = ObjectId {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        let label = Some(id.to_string());
        if let Some((file, document)) = self.seen.get(&id) {
            let message = format!(
                "duplicate: already defined in {} (document {document}); this definition is \
                 ignored",
                file.display()
            );
            return self.error(doc, label, None, message);
        }
        self.seen
            .insert(id.clone(), (doc.file.to_path_buf(), doc.document));

        let converted = if api_version != kind.api_version() {
            let message = if api_version.is_empty() {
                "required".to_string()
            } else {
                format!(
                    "unsupported value {api_version:?} for {kind}: expected {:?}",
                    kind.api_version()
                )
            };
            Err(Invalid::Fields(vec![FieldError {
                field: "apiVersion".to_string(),
                message,
            }]))
        } else {
            convert_object(kind, value, &id, text)
        };
        let object = match converted {
            Ok(object) => Some(object),
            Err(Invalid::Decode(message)) => {
                self.error(doc, label, None, message);
                None
            }
            Err(Invalid::Fields(errors)) => {
                for e in errors {
                    self.error(doc, label.clone(), Some(e.field), e.message);
                }
                None
            }
            Err(Invalid::FailClosed(object, errors)) => {
                for e in errors {
                    let message = format!(
                        "{} (enforced fail-closed: the policy isolates what it selects, this \
                         rule allows nothing)",
                        e.message
                    );
                    self.error(doc, label.clone(), Some(e.field), message);
                }
                Some(*object)
            }
            Err(Invalid::Unknown(object, fields)) => {
                for f in fields {
                    self.error(
                        doc,
                        label.clone(),
                        Some(f),
                        "unknown field (ignored, as the API server ignores it without strict \
                         field validation)",
                    );
                }
                Some(*object)
            }
        };
        self.result.objects.push(Loaded {
            id,
            file: doc.file.to_path_buf(),
            document: doc.document,
            object,
        });
    }
}

/// Why an identified object is invalid.
enum Invalid {
    /// It does not even have the shape of its kind (wrong types, missing required fields).
    Decode(String),
    /// Fields break validation rules.
    Fields(Vec<FieldError>),
    /// Fields break validation rules, and the object is still enforced in a fail-closed
    /// form (NetworkPolicies: see `convert::network_policy_fail_closed`).
    FailClosed(Box<Object>, Vec<FieldError>),
    /// Fields its schema does not know, left out as the API server leaves them out without
    /// strict validation; the rest of the object is used.
    Unknown(Box<Object>, Vec<String>),
}

impl From<Vec<FieldError>> for Invalid {
    fn from(errors: Vec<FieldError>) -> Self {
        Invalid::Fields(errors)
    }
}

/// Decodes and converts an object of a supported kind.
fn convert_object(
    kind: Kind,
    value: &Value,
    id: &ObjectId,
    text: Option<Text<'_>>,
) -> Result<Object, Invalid> {
    let (object, unknown) = match kind {
        Kind::Namespace => {
            let (ns, unknown) = decode::<core::Namespace>(value, text)?;
            (Object::Namespace(convert::namespace(&ns)?), unknown)
        }
        Kind::Pod => {
            let (pod, unknown) = decode::<core::Pod>(value, text)?;
            (Object::Pod(convert::pod(&pod)?), unknown)
        }
        Kind::NetworkPolicy => {
            let (np, unknown) = decode::<net::NetworkPolicy>(value, text)?;
            let (policy, errors) = convert::network_policy_with_unknown_fields(&np, &unknown);
            if !errors.is_empty() {
                return Err(Invalid::FailClosed(
                    Box::new(Object::NetworkPolicy(policy)),
                    errors,
                ));
            }
            (Object::NetworkPolicy(policy), unknown)
        }
        Kind::RuntimePolicy => (
            Object::RuntimePolicy(runtime_policy(value, id)?),
            Vec::new(),
        ),
        Kind::Service => {
            let (svc, unknown) = decode::<core::Service>(value, text)?;
            (Object::Service(convert::service(&svc)?), unknown)
        }
        Kind::EndpointSlice => {
            let (slice, unknown) =
                decode::<k8s_openapi::api::discovery::v1::EndpointSlice>(value, text)?;
            (
                Object::EndpointSlice(convert::endpoint_slice(&slice)?),
                unknown,
            )
        }
    };
    if unknown.is_empty() {
        Ok(object)
    } else {
        Err(Invalid::Unknown(Box::new(object), unknown))
    }
}

/// A RuntimePolicy: name, namespace and spec validated.
fn runtime_policy(value: &Value, id: &ObjectId) -> Result<RuntimePolicy, Vec<FieldError>> {
    let mut errors = Vec::new();
    if let Err(why) = names::dns1123_subdomain(&id.name) {
        errors.push(FieldError {
            field: "metadata.name".to_string(),
            message: format!("invalid value {:?}: {why}", id.name),
        });
    }
    if let Err(why) = names::dns1123_label(&id.namespace) {
        errors.push(FieldError {
            field: "metadata.namespace".to_string(),
            message: format!("invalid value {:?}: {why}", id.namespace),
        });
    }
    let policy = match crate::runtime_policy::convert(&id.namespace, &id.name, value) {
        Ok(p) => Some(p),
        Err(e) => {
            errors.extend(e);
            None
        }
    };
    match policy {
        Some(policy) if errors.is_empty() => Ok(RuntimePolicy {
            namespace: id.namespace.clone(),
            name: id.name.clone(),
            object: value.clone(),
            policy,
        }),
        _ => Err(errors),
    }
}

/// The source text of a document, when it holds exactly the object being decoded.
#[derive(Clone, Copy)]
enum Text<'a> {
    /// YAML, padded so that its lines are the file's.
    Yaml(&'a str),
    Json(&'a str),
}

/// Decodes a k8s-openapi object from its JSON value, with the paths of the fields its
/// schema does not know (which the decoding drops).
fn decode<T: DeserializeOwned + Serialize>(
    value: &Value,
    text: Option<Text<'_>>,
) -> Result<(T, Vec<String>), Invalid> {
    let error = match T::deserialize(value) {
        Ok(object) => {
            let mut unknown = Vec::new();
            if let Ok(decoded) = serde_json::to_value(&object) {
                unknown_fields(value, &decoded, "", &mut unknown);
            }
            return Ok((object, unknown));
        }
        Err(e) => e,
    };
    // serde_json's errors from a Value name neither the field nor the line. The same
    // decode through serde_yaml_ng reports the field's path; from the document's own YAML
    // text it reports the line too.
    if let Some(Text::Yaml(yaml)) = text
        && let Err(e) = serde_yaml_ng::from_str::<T>(yaml)
    {
        return Err(Invalid::Decode(format!("invalid object: {e}")));
    }
    // Otherwise decode the object as (space-indented) JSON, which is YAML, for the path;
    // lines of that re-serialized text would mislead, so they are dropped.
    let pretty = serde_json::to_string_pretty(value).unwrap_or_default();
    let mut message = match serde_yaml_ng::from_str::<T>(&pretty) {
        Err(e) => {
            let message = e.to_string();
            match message.rfind(" at line ") {
                Some(at) => message[..at].to_string(),
                None => message,
            }
        }
        Ok(_) => error.to_string(),
    };
    // JSON text gives the line through serde_json.
    if let Some(Text::Json(json)) = text
        && let Err(e) = serde_json::from_str::<T>(json)
        && e.line() > 0
    {
        message = format!("{message} at line {} column {}", e.line(), e.column());
    }
    Err(Invalid::Decode(format!("invalid object: {message}")))
}

/// Paths in `given` that the decoded object (`kept`, serialized back) does not have:
/// fields unknown to the schema. Null and empty values are not reported (`status: {}`,
/// `creationTimestamp: null`, as `kubectl get -o yaml` writes them, carry nothing).
fn unknown_fields(given: &Value, kept: &Value, path: &str, out: &mut Vec<String>) {
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        _ => false,
    };
    match (given, kept) {
        (Value::Object(g), Value::Object(k)) => {
            for (key, v) in g {
                let p = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match k.get(key) {
                    Some(kv) => unknown_fields(v, kv, &p, out),
                    None if empty(v) => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(g), Value::Array(k)) => {
            for (i, (v, kv)) in g.iter().zip(k).enumerate() {
                unknown_fields(v, kv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Whether an object of `kind` with `api_version` is meant to be the kind enforcer reads.
/// Objects of the same kind name from another API group (Calico's
/// `projectcalico.org/v3` NetworkPolicy, ...) are different kinds; a missing apiVersion or
/// another version of the expected group (including the retired `extensions/v1beta1`
/// NetworkPolicy) is an error in an object of ours.
fn claims(kind: Kind, api_version: &str) -> bool {
    let group = |v: &str| {
        v.rsplit_once('/')
            .map_or("", |(group, _)| group)
            .to_string()
    };
    api_version.is_empty()
        || group(api_version) == group(kind.api_version())
        || (kind == Kind::NetworkPolicy && group(api_version) == "extensions")
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Parses one YAML document into JSON, applying merge keys (`<<`). Syntax errors carry
/// the line and column.
fn parse_yaml(text: &str) -> Result<Value, String> {
    let mut value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| format!("invalid YAML: {e}"))?;
    value
        .apply_merge()
        .map_err(|e| format!("invalid YAML: {e}"))?;
    serde_json::to_value(&value).map_err(|e| format!("cannot be represented as JSON: {e}"))
}

/// One document of a YAML stream.
#[derive(Debug, PartialEq, Eq)]
struct YamlDoc<'a> {
    /// 0-based line of the file where the document starts.
    first_line: usize,
    /// Its text, including its `---` marker if any.
    text: &'a str,
}

/// Files larger than this are not read: a directory of manifests is not a place for
/// gigabytes, and the agent's memory stays bounded whatever is dropped there.
const MAX_FILE_BYTES: u64 = 64 << 20;

/// One object (or List) per document at most this large. The API server refuses request
/// bodies over 3 MiB; a little more is allowed for comments and indentation.
const MAX_DOCUMENT_BYTES: usize = 4 << 20;

/// Flow collections (`[`, `{`) nested deeper than this are refused before parsing: the
/// YAML parser takes time quadratic in the depth before its own recursion limit (128)
/// stops it (100,000 levels in 200 kB kept it busy for 40 s).
const MAX_FLOW_DEPTH: usize = 256;

/// The 1-based line where flow collections nest deeper than `limit`, if they do. Quoted
/// scalars and comments are skipped; block scalars are not recognised, so brackets in
/// them count (no manifest has hundreds of unbalanced ones).
fn flow_deeper_than(text: &str, limit: usize) -> Option<usize> {
    let (mut depth, mut line) = (0usize, 1);
    let mut chars = text.chars().peekable();
    let mut prev = '\n';
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            '#' if prev.is_whitespace() => while chars.next_if(|&c| c != '\n').is_some() {},
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        '\n' => line += 1,
                        _ => {}
                    }
                }
            }
            '\'' if !prev.is_alphanumeric() => {
                while let Some(c) = chars.next() {
                    match c {
                        '\'' if chars.next_if_eq(&'\'').is_none() => break,
                        '\n' => line += 1,
                        _ => {}
                    }
                }
            }
            '[' | '{' => {
                depth += 1;
                if depth > limit {
                    return Some(line);
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        prev = c;
    }
    None
}

/// Reads at most [`MAX_FILE_BYTES`] + 1 bytes (enough to tell that a file is over the
/// limit, whatever its size claims or becomes while it is read).
fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Splits a YAML stream into documents at `---` marker lines (which YAML forbids inside
/// any content), so that each document parses on its own and a syntax error loses only
/// its document. Text before the first marker is a document only if it has content.
fn split_documents(text: &str) -> Vec<YamlDoc<'_>> {
    fn is_marker(line: &str) -> bool {
        line.strip_prefix("---")
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
    }
    fn is_content(line: &str) -> bool {
        let line = line.trim();
        !line.is_empty() && !line.starts_with('#')
    }
    let mut docs = Vec::new();
    let (mut start, mut first_line) = (0, 0);
    // Whether the current document began with a marker, and whether it has content.
    let (mut explicit, mut content) = (false, false);
    let mut offset = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        if is_marker(line) {
            if explicit || content {
                docs.push(YamlDoc {
                    first_line,
                    text: &text[start..offset],
                });
            }
            (start, first_line, explicit, content) = (offset, n, true, false);
        } else if !line.starts_with('%') && is_content(line) {
            // '%' at the start of a line is a directive (%YAML), not content.
            content = true;
        }
        offset += line.len();
    }
    if explicit || content {
        docs.push(YamlDoc {
            first_line,
            text: &text[start..],
        });
    }
    docs
}

#[cfg(test)]
mod tests;
