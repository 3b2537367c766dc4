//! Standalone manifests: loading, validation into the model, directory watching.
//!
//! In standalone mode the agent's source of truth is a directory of Kubernetes manifests
//! (`*.yaml`, `*.yml`, `*.json`). The pieces:
//!
//! - [`convert`]: Kubernetes objects (k8s-openapi types) to the validated [`crate::model`],
//!   with every error of an object named by its field path. Shared with the API server
//!   source.
//! - [`load_dir`]: reads the directory once, decoding and converting every object, and
//!   reports errors naming the file, the document, the object and the field. A broken
//!   document never prevents the others from loading.
//! - [`Store`]: the last-known-good state across reloads. An object that becomes invalid
//!   keeps its previous valid version, so a typo never silently opens enforcement.
//! - [`watch`]: inotify on the directory, coalescing bursts into one notification, after
//!   which the caller runs [`Store::reload`].

pub mod convert;
mod load;
mod names;
mod store;
mod watch;

use std::{fmt, path::PathBuf};

pub use convert::FieldError;
pub use load::{Ignored, LoadResult, Loaded, load_bytes, load_dir};
pub use store::{ReloadReport, Store};
pub use watch::{DirWatcher, watch};

use crate::model;

/// The kinds of objects the agent reads from manifests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Namespace,
    Pod,
    NetworkPolicy,
    /// enforcer's own runtime guard policy (`enforcer.dev/v1alpha1`).
    RuntimePolicy,
    /// Services and their EndpointSlices: the frontends translated at the socket.
    Service,
    EndpointSlice,
}

impl Kind {
    /// The kind as written in manifests.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::RuntimePolicy => "RuntimePolicy",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
        }
    }

    /// The only `apiVersion` accepted for the kind.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Namespace | Kind::Pod | Kind::Service => "v1",
            Kind::NetworkPolicy => "networking.k8s.io/v1",
            Kind::RuntimePolicy => "enforcer.dev/v1alpha1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
        }
    }

    /// Whether objects of the kind live in a namespace.
    pub fn namespaced(self) -> bool {
        self != Kind::Namespace
    }

    fn from_name(name: &str) -> Option<Kind> {
        Some(match name {
            "Namespace" => Kind::Namespace,
            "Pod" => Kind::Pod,
            "NetworkPolicy" => Kind::NetworkPolicy,
            "RuntimePolicy" => Kind::RuntimePolicy,
            "Service" => Kind::Service,
            "EndpointSlice" => Kind::EndpointSlice,
            _ => return None,
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The identity of an object across reloads: kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId {
    pub kind: Kind,
    /// Empty for cluster-scoped kinds (Namespace).
    pub namespace: String,
    pub name: String,
}

/// `NetworkPolicy x/allow-foo`, `Namespace x`.
impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind.namespaced() {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        } else {
            write!(f, "{} {}", self.kind, self.name)
        }
    }
}

/// A RuntimePolicy: validated (see `crate::runtime_policy::convert`), plus the object as
/// written.
#[derive(Clone, Debug, PartialEq)]
pub struct RuntimePolicy {
    pub namespace: String,
    pub name: String,
    /// The object as written (apiVersion, kind, metadata, spec, ...).
    pub object: serde_json::Value,
    /// The validated policy.
    pub policy: crate::runtime_policy::RuntimePolicy,
}

impl RuntimePolicy {
    pub fn key(&self) -> model::ObjectRef {
        model::ObjectRef {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

/// A valid object, converted.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Namespace(model::Namespace),
    Pod(model::Pod),
    NetworkPolicy(model::NetworkPolicy),
    RuntimePolicy(RuntimePolicy),
    Service(model::Service),
    EndpointSlice(model::EndpointSlice),
}

/// A problem found while loading manifests.
///
/// Displayed as `deploy/x.yaml (document 2) NetworkPolicy x/allow-foo:
/// spec.ingress[0].ports[0].port: must be between 1 and 65535, got 70000`; the parts that
/// are unknown (document, object, field) are left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestError {
    /// The file (or, when it cannot be listed, the directory).
    pub file: PathBuf,
    /// 1-based index of the document in the file; 0 when the error concerns the whole
    /// file.
    pub document: usize,
    /// The object, like `NetworkPolicy x/allow-foo`, when it could be identified (or just
    /// the kind when its name is missing).
    pub object: Option<String>,
    /// JSON path of the field: relative to the object when `object` is set, else to the
    /// document.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.document > 0 {
            write!(f, " (document {})", self.document)?;
        }
        if let Some(object) = &self.object {
            write!(f, " {object}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ManifestError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_error_display() {
        let mut e = ManifestError {
            file: PathBuf::from("deploy/x.yaml"),
            document: 2,
            object: Some("NetworkPolicy x/allow-foo".into()),
            field: Some("spec.ingress[0].ports[0].port".into()),
            message: "must be between 1 and 65535, got 70000".into(),
        };
        assert_eq!(
            e.to_string(),
            "deploy/x.yaml (document 2) NetworkPolicy x/allow-foo: \
             spec.ingress[0].ports[0].port: must be between 1 and 65535, got 70000"
        );
        e.document = 0;
        e.object = None;
        e.field = None;
        e.message = "permission denied".into();
        assert_eq!(e.to_string(), "deploy/x.yaml: permission denied");
    }

    #[test]
    fn object_id_display() {
        let np = ObjectId {
            kind: Kind::NetworkPolicy,
            namespace: "x".into(),
            name: "allow-foo".into(),
        };
        assert_eq!(np.to_string(), "NetworkPolicy x/allow-foo");
        let ns = ObjectId {
            kind: Kind::Namespace,
            namespace: String::new(),
            name: "x".into(),
        };
        assert_eq!(ns.to_string(), "Namespace x");
    }
}
