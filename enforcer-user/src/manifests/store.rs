//! The last-known-good state of the manifests directory across reloads.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use super::{
    LoadResult, ManifestError, Object, ObjectId, RuntimePolicy,
    load::{FileCache, load_dir_cached},
};
use crate::model::{Cluster, ObjectRef};

/// What a reload did.
#[derive(Debug, Default)]
pub struct ReloadReport {
    /// Every problem found in the files.
    pub errors: Vec<ManifestError>,
    /// The resulting [`Cluster`] differs from the previous one.
    pub changed: bool,
    /// The resulting RuntimePolicies differ from the previous ones.
    pub runtime_changed: bool,
    /// Objects whose previous valid version is kept because the files hold an invalid
    /// version, or because the file they came from could not be fully read.
    pub kept: Vec<ObjectId>,
}

/// A valid object and the file it was last seen in.
#[derive(Clone, Debug)]
struct Stored {
    object: Object,
    file: PathBuf,
}

/// The objects of the manifests directory, as last known to be valid.
///
/// Rules, per object identity (kind, namespace, name):
/// - valid in the files: that version;
/// - present in the files but invalid: the previous valid version, if any (enforcement
///   never silently opens because of a typo); the error is reported;
/// - absent from the files: removed, unless its file (or the directory) could not be fully
///   read, in which case the previous version is kept;
/// - defined several times: the first definition in file-name order wins.
#[derive(Debug, Default)]
pub struct Store {
    objects: BTreeMap<ObjectId, Stored>,
    cluster: Cluster,
    runtime_policies: BTreeMap<ObjectRef, RuntimePolicy>,
    /// Parsed files, reused while unchanged.
    files: FileCache,
}

impl Store {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads `dir` again and updates the state.
    pub fn reload(&mut self, dir: &Path) -> ReloadReport {
        let result = load_dir_cached(dir, &mut self.files);
        self.apply(result)
    }

    /// Updates the state from a load of the directory.
    pub fn apply(&mut self, load: LoadResult) -> ReloadReport {
        let mut next = BTreeMap::new();
        let mut kept = Vec::new();
        let mut present = BTreeSet::new();
        for loaded in load.objects {
            present.insert(loaded.id.clone());
            let object = match loaded.object {
                Some(object) => object,
                None => match self.objects.get(&loaded.id) {
                    Some(previous) => {
                        kept.push(loaded.id.clone());
                        previous.object.clone()
                    }
                    None => continue,
                },
            };
            let file = loaded.file;
            next.insert(loaded.id, Stored { object, file });
        }
        for (id, previous) in &self.objects {
            let unknown = load.dir_unreadable || load.incomplete.contains(&previous.file);
            if unknown && !present.contains(id) {
                kept.push(id.clone());
                next.insert(id.clone(), previous.clone());
            }
        }
        for id in &kept {
            tracing::warn!("{id}: keeping its last valid version (see the manifest errors)");
        }

        let (cluster, runtime_policies) = build(&next);
        let changed = cluster.namespaces != self.cluster.namespaces
            || cluster.pods != self.cluster.pods
            || cluster.network_policies != self.cluster.network_policies
            || cluster.services != self.cluster.services
            || cluster.endpoint_slices != self.cluster.endpoint_slices;
        let runtime_changed = runtime_policies != self.runtime_policies;
        self.objects = next;
        self.cluster = cluster;
        self.runtime_policies = runtime_policies;
        ReloadReport {
            errors: load.errors,
            changed,
            runtime_changed,
            kept,
        }
    }

    /// The cluster as described by the manifests.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The RuntimePolicies, by namespace and name.
    pub fn runtime_policies(&self) -> &BTreeMap<ObjectRef, RuntimePolicy> {
        &self.runtime_policies
    }
}

/// The model of a set of objects.
fn build(objects: &BTreeMap<ObjectId, Stored>) -> (Cluster, BTreeMap<ObjectRef, RuntimePolicy>) {
    let mut cluster = Cluster::default();
    let mut runtime = BTreeMap::new();
    for stored in objects.values() {
        match &stored.object {
            Object::Namespace(ns) => {
                cluster.namespaces.insert(ns.name.clone(), ns.clone());
            }
            Object::Pod(pod) => {
                cluster.pods.insert(pod.key(), pod.clone());
            }
            Object::NetworkPolicy(np) => {
                cluster.network_policies.insert(np.key(), np.clone());
            }
            Object::RuntimePolicy(rp) => {
                runtime.insert(rp.key(), rp.clone());
            }
            Object::Service(svc) => {
                cluster.services.insert(svc.key(), svc.clone());
            }
            Object::EndpointSlice(slice) => {
                cluster.endpoint_slices.insert(slice.key(), slice.clone());
            }
        }
    }
    (cluster, runtime)
}

#[cfg(test)]
mod tests;
