//! The cluster as the watches report it, kept as the model only, and published as
//! [`Snapshot`]s without copying the world for each one.
//!
//! # Snapshots
//!
//! The state lives in the last published snapshot (`latest`) plus the changes made since
//! (`pending`, per key). Publishing brings a second buffer (`spare`, the snapshot published
//! before `latest`) up to date by replaying only the keys that changed since it was
//! current, and publishes it; `latest` becomes the spare. The spare can be reused only
//! once nobody else holds it (the channel has moved on and the agent has finished
//! compiling it); otherwise `latest` is cloned once. So a snapshot normally costs
//! O(changes), memory stays at two copies of the model, and a burst of changes to one key
//! costs one entry.
//!
//! # Watches and objects
//!
//! Each object belongs to the watch that reported it. Pods come from two watches: a pod of
//! this node belongs to [`Res::LocalPods`], any other to [`Res::Pods`]; when both report
//! the same key (a StatefulSet pod re-created elsewhere before the local deletion arrives)
//! the local one is shown and the other kept aside until the local one goes.
//!
//! A watch's relist (after `Init`) applies objects as they come and, at `InitDone`, removes
//! the objects of that watch that the list did not contain. An invalid object is logged
//! and left out; if the key held a valid version, that version stays (fail closed).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::Debug,
    hash::Hash,
    sync::Arc,
    time::{Duration, SystemTime},
};

use super::objects::{Res, WATCHES};
use crate::{
    agent::source::Snapshot,
    manifests::{FieldError, Kind, ObjectId},
    model::{self, ObjectRef},
    runtime_policy::RuntimePolicy,
};

/// A model type held in the snapshot, by key.
pub trait Slot: Clone + PartialEq + Debug + Send + Sync + 'static {
    type Key: Clone + Eq + Hash + Ord + Debug + Send + Sync + 'static;
    fn map(s: &Snapshot) -> &BTreeMap<Self::Key, Self>;
    fn map_mut(s: &mut Snapshot) -> &mut BTreeMap<Self::Key, Self>;
    fn table(t: &mut Tables) -> &mut Table<Self>;
    fn table_ref(t: &Tables) -> &Table<Self>;
    /// The watch this object belongs to.
    fn owner(&self, node: &str) -> Res;
    fn id(key: &Self::Key) -> ObjectId;
}

fn namespaced_id(kind: Kind, key: &ObjectRef) -> ObjectId {
    ObjectId {
        kind,
        namespace: key.namespace.clone(),
        name: key.name.clone(),
    }
}

impl Slot for model::Namespace {
    type Key = String;
    fn map(s: &Snapshot) -> &BTreeMap<String, Self> {
        &s.cluster.namespaces
    }
    fn map_mut(s: &mut Snapshot) -> &mut BTreeMap<String, Self> {
        &mut s.cluster.namespaces
    }
    fn table(t: &mut Tables) -> &mut Table<Self> {
        &mut t.namespaces
    }
    fn table_ref(t: &Tables) -> &Table<Self> {
        &t.namespaces
    }
    fn owner(&self, _: &str) -> Res {
        Res::Namespaces
    }
    fn id(key: &String) -> ObjectId {
        ObjectId {
            kind: Kind::Namespace,
            namespace: String::new(),
            name: key.clone(),
        }
    }
}

impl Slot for model::Pod {
    type Key = ObjectRef;
    fn map(s: &Snapshot) -> &BTreeMap<ObjectRef, Self> {
        &s.cluster.pods
    }
    fn map_mut(s: &mut Snapshot) -> &mut BTreeMap<ObjectRef, Self> {
        &mut s.cluster.pods
    }
    fn table(t: &mut Tables) -> &mut Table<Self> {
        &mut t.pods
    }
    fn table_ref(t: &Tables) -> &Table<Self> {
        &t.pods
    }
    fn owner(&self, node: &str) -> Res {
        if self.node_name.as_deref() == Some(node) {
            Res::LocalPods
        } else {
            Res::Pods
        }
    }
    fn id(key: &ObjectRef) -> ObjectId {
        namespaced_id(Kind::Pod, key)
    }
}

impl Slot for model::NetworkPolicy {
    type Key = ObjectRef;
    fn map(s: &Snapshot) -> &BTreeMap<ObjectRef, Self> {
        &s.cluster.network_policies
    }
    fn map_mut(s: &mut Snapshot) -> &mut BTreeMap<ObjectRef, Self> {
        &mut s.cluster.network_policies
    }
    fn table(t: &mut Tables) -> &mut Table<Self> {
        &mut t.network_policies
    }
    fn table_ref(t: &Tables) -> &Table<Self> {
        &t.network_policies
    }
    fn owner(&self, _: &str) -> Res {
        Res::NetworkPolicies
    }
    fn id(key: &ObjectRef) -> ObjectId {
        namespaced_id(Kind::NetworkPolicy, key)
    }
}

impl Slot for RuntimePolicy {
    type Key = ObjectRef;
    fn map(s: &Snapshot) -> &BTreeMap<ObjectRef, Self> {
        &s.runtime_policies
    }
    fn map_mut(s: &mut Snapshot) -> &mut BTreeMap<ObjectRef, Self> {
        &mut s.runtime_policies
    }
    fn table(t: &mut Tables) -> &mut Table<Self> {
        &mut t.runtime_policies
    }
    fn table_ref(t: &Tables) -> &Table<Self> {
        &t.runtime_policies
    }
    fn owner(&self, _: &str) -> Res {
        Res::RuntimePolicies
    }
    fn id(key: &ObjectRef) -> ObjectId {
        namespaced_id(Kind::RuntimePolicy, key)
    }
}

impl Slot for model::Service {
    type Key = ObjectRef;
    fn map(s: &Snapshot) -> &BTreeMap<ObjectRef, Self> {
        &s.cluster.services
    }
    fn map_mut(s: &mut Snapshot) -> &mut BTreeMap<ObjectRef, Self> {
        &mut s.cluster.services
    }
    fn table(t: &mut Tables) -> &mut Table<Self> {
        &mut t.services
    }
    fn table_ref(t: &Tables) -> &Table<Self> {
        &t.services
    }
    fn owner(&self, _: &str) -> Res {
        Res::Services
    }
    fn id(key: &ObjectRef) -> ObjectId {
        namespaced_id(Kind::Service, key)
    }
}

impl Slot for model::EndpointSlice {
    type Key = ObjectRef;
    fn map(s: &Snapshot) -> &BTreeMap<ObjectRef, Self> {
        &s.cluster.endpoint_slices
    }
    fn map_mut(s: &mut Snapshot) -> &mut BTreeMap<ObjectRef, Self> {
        &mut s.cluster.endpoint_slices
    }
    fn table(t: &mut Tables) -> &mut Table<Self> {
        &mut t.endpoint_slices
    }
    fn table_ref(t: &Tables) -> &Table<Self> {
        &t.endpoint_slices
    }
    fn owner(&self, _: &str) -> Res {
        Res::EndpointSlices
    }
    fn id(key: &ObjectRef) -> ObjectId {
        namespaced_id(Kind::EndpointSlice, key)
    }
}

/// An object from a watch, converted.
#[derive(Debug)]
pub struct Converted<T: Slot> {
    pub key: T::Key,
    /// metadata.resourceVersion: an invalid version is reported once, not at every relist.
    pub version: String,
    pub result: Result<T, Vec<FieldError>>,
}

/// What a watch reports, objects already converted.
#[derive(Debug)]
pub enum Ev<T: Slot> {
    /// A (re)list starts.
    Init,
    /// An object from the list or the watch.
    Apply(Converted<T>),
    /// The object is gone (or no longer belongs to this watch).
    Delete(T::Key),
    /// The list is complete: objects of this watch it did not contain are gone.
    InitDone,
    /// The resource is not served (an optional CRD is not installed): no objects.
    Missing,
    /// A watch error (the watcher retries by itself); `kind` is the metric label.
    Error { kind: &'static str },
}

/// The per-kind state: changes since the last snapshot, and relist bookkeeping.
pub struct Table<T: Slot> {
    /// Changes since `latest`: the new value, or `None` for a removal.
    pending: HashMap<T::Key, Option<T>>,
    /// Keys where `spare` differs from `latest`.
    spare_stale: HashSet<T::Key>,
    /// Keys listed since a watch's `Init`, while it relists.
    seen: HashMap<Res, HashSet<T::Key>>,
    /// Objects of a lower-priority watch hidden by a higher one's object of the same key.
    shadow: HashMap<T::Key, T>,
    /// Invalid objects: the watch and resourceVersion of the version last reported.
    invalid: HashMap<T::Key, (Res, String)>,
}

impl<T: Slot> Default for Table<T> {
    fn default() -> Self {
        Self {
            pending: HashMap::new(),
            spare_stale: HashSet::new(),
            seen: HashMap::new(),
            shadow: HashMap::new(),
            invalid: HashMap::new(),
        }
    }
}

impl<T: Slot> Table<T> {
    /// The current value: pending change, else the latest snapshot's.
    fn get<'a>(&'a self, latest: &'a Snapshot, key: &T::Key) -> Option<&'a T> {
        match self.pending.get(key) {
            Some(v) => v.as_ref(),
            None => T::map(latest).get(key),
        }
    }

    /// Set the current value (`None`: remove); false if it was already that. `counts` are
    /// the objects shown per owning watch.
    fn set(
        &mut self,
        latest: &Snapshot,
        node: &str,
        key: T::Key,
        value: Option<T>,
        counts: &mut [i64; WATCHES],
    ) -> bool {
        let current = self.get(latest, &key);
        if current == value.as_ref() {
            return false;
        }
        if let Some(c) = current {
            counts[c.owner(node).index()] -= 1;
        }
        if let Some(v) = &value {
            counts[v.owner(node).index()] += 1;
        }
        if T::map(latest).get(&key) == value.as_ref() {
            self.pending.remove(&key);
        } else {
            self.pending.insert(key, value);
        }
        true
    }

    /// Every current object with its key.
    fn live<'a>(&'a self, latest: &'a Snapshot) -> impl Iterator<Item = (&'a T::Key, &'a T)> {
        let base = T::map(latest)
            .iter()
            .filter(|(k, _)| !self.pending.contains_key(*k));
        let changed = self
            .pending
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)));
        base.chain(changed)
    }

    /// Apply the pending changes to `s` (which equals `latest`); they become what the
    /// previous snapshot lacks.
    fn apply_pending(&mut self, s: &mut Snapshot) {
        let map = T::map_mut(s);
        self.spare_stale.clear();
        self.spare_stale.reserve(self.pending.len());
        for (k, v) in self.pending.drain() {
            self.spare_stale.insert(k.clone());
            match v {
                Some(v) => {
                    map.insert(k, v);
                }
                None => {
                    map.remove(&k);
                }
            }
        }
    }

    /// Bring `spare` (the snapshot before `latest`) to the current state.
    fn catch_up(&mut self, spare: &mut Snapshot, latest: &Snapshot) {
        let map = T::map_mut(spare);
        if self.spare_stale.len() > T::map(latest).len() / 4 {
            // Most of it changed (the spare is the initial empty state): a copy is cheaper
            // than key-by-key updates.
            self.spare_stale.clear();
            map.clone_from(T::map(latest));
        }
        for k in self.spare_stale.drain() {
            if self.pending.contains_key(&k) {
                continue;
            }
            match T::map(latest).get(&k) {
                Some(v) => {
                    map.insert(k, v.clone());
                }
                None => {
                    map.remove(&k);
                }
            }
        }
        self.apply_pending(spare);
    }
}

#[derive(Default)]
pub struct Tables {
    pub namespaces: Table<model::Namespace>,
    pub pods: Table<model::Pod>,
    pub network_policies: Table<model::NetworkPolicy>,
    pub runtime_policies: Table<RuntimePolicy>,
    pub services: Table<model::Service>,
    pub endpoint_slices: Table<model::EndpointSlice>,
}

/// Counters and state of one watch, for readiness and metrics.
#[derive(Clone, Debug, Default)]
pub struct WatchStats {
    /// The initial list is complete (or the optional resource is missing).
    pub synced: bool,
    /// Between `Init` and `InitDone`.
    pub relisting: bool,
    /// The optional resource is not served.
    pub missing: bool,
    /// Relists after the first complete one.
    pub restarts: u64,
    /// Objects applied (listed or watched) and deletions received.
    pub applied: u64,
    pub deleted: u64,
    /// Errors by kind.
    pub errors: BTreeMap<&'static str, u64>,
    pub last_event: Option<SystemTime>,
    /// Since when the watch has been failing (an error, and no successful answer since);
    /// `None` while it works. A resourceVersion that expired is not a failure.
    pub failing_since: Option<SystemTime>,
    /// The last error (other than an expired resourceVersion).
    pub last_error: Option<SystemTime>,
}

/// How a snapshot was built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    /// The spare buffer was brought up to date with the changed keys only.
    Incremental,
    /// The latest snapshot was cloned (its spare was still in use).
    Full,
}

/// The state of every watch and the snapshots built from it.
pub struct Store {
    node: String,
    latest: Arc<Snapshot>,
    spare: Option<Arc<Snapshot>>,
    tables: Tables,
    watches: [WatchStats; WATCHES],
    /// Objects currently shown, per owning watch.
    counts: [i64; WATCHES],
}

impl Store {
    pub fn new(node: &str) -> Self {
        Self {
            node: node.to_string(),
            latest: Arc::new(Snapshot::default()),
            spare: None,
            tables: Tables::default(),
            watches: Default::default(),
            counts: [0; WATCHES],
        }
    }

    /// Every watch has completed its initial list.
    pub fn synced(&self) -> bool {
        self.watches.iter().all(|w| w.synced)
    }

    /// Something changed since the last snapshot.
    pub fn dirty(&self) -> bool {
        let t = &self.tables;
        !(t.namespaces.pending.is_empty()
            && t.pods.pending.is_empty()
            && t.network_policies.pending.is_empty()
            && t.runtime_policies.pending.is_empty()
            && t.services.pending.is_empty()
            && t.endpoint_slices.pending.is_empty())
    }

    pub fn stats(&self, res: Res) -> &WatchStats {
        &self.watches[res.index()]
    }

    /// The watch failing for the longest time, and since when: the API server (or the
    /// way to it) is not answering; what is enforced is the last state received. A watch
    /// counts as failing from its first error until a successful answer, or until it has
    /// gone `quiet` without a new error (a watch that resumed successfully delivers nothing
    /// until something changes, and a failing one errs again after each backoff).
    pub fn failing(&self, quiet: Duration) -> Option<(Res, SystemTime)> {
        let now = SystemTime::now();
        Res::ALL
            .into_iter()
            .filter_map(|r| {
                let w = &self.watches[r.index()];
                let recent = w
                    .last_error
                    .is_some_and(|e| now.duration_since(e).unwrap_or_default() < quiet);
                w.failing_since.filter(|_| recent).map(|t| (r, t))
            })
            .min_by_key(|(_, t)| *t)
    }

    /// Objects shown that belong to `res`.
    pub fn objects(&self, res: Res) -> usize {
        usize::try_from(self.counts[res.index()]).unwrap_or(0)
    }

    /// Invalid objects of `res` currently left out or replaced by their last valid version.
    pub fn invalid(&self, res: Res) -> usize {
        fn count<T: Slot>(t: &Table<T>, res: Res) -> usize {
            t.invalid.values().filter(|(r, _)| *r == res).count()
        }
        let t = &self.tables;
        match res {
            Res::LocalPods | Res::Pods => count(&t.pods, res),
            Res::Namespaces => count(&t.namespaces, res),
            Res::NetworkPolicies => count(&t.network_policies, res),
            Res::RuntimePolicies => count(&t.runtime_policies, res),
            Res::Services => count(&t.services, res),
            Res::EndpointSlices => count(&t.endpoint_slices, res),
        }
    }

    /// The current value of a key (tests).
    #[cfg(test)]
    pub fn get<T: Slot>(&self, key: &T::Key) -> Option<&T> {
        T::table_ref(&self.tables).get(&self.latest, key)
    }

    /// Apply one event of watch `res`.
    pub fn handle<T: Slot>(&mut self, res: Res, ev: Ev<T>) {
        let now = SystemTime::now();
        match ev {
            Ev::Init => {
                let w = &mut self.watches[res.index()];
                if w.synced && !w.relisting && !w.missing {
                    w.restarts += 1;
                }
                w.relisting = true;
                T::table(&mut self.tables).seen.insert(res, HashSet::new());
            }
            Ev::Apply(c) => {
                let w = &mut self.watches[res.index()];
                w.failing_since = None;
                w.applied += 1;
                w.last_event = Some(now);
                if let Some(seen) = T::table(&mut self.tables).seen.get_mut(&res) {
                    seen.insert(c.key.clone());
                }
                self.apply(res, c);
            }
            Ev::Delete(key) => {
                let w = &mut self.watches[res.index()];
                w.failing_since = None;
                w.deleted += 1;
                w.last_event = Some(now);
                self.remove::<T>(res, &key);
            }
            Ev::InitDone => {
                let seen = T::table(&mut self.tables)
                    .seen
                    .remove(&res)
                    .unwrap_or_default();
                self.sweep::<T>(res, |k| !seen.contains(k));
                let w = &mut self.watches[res.index()];
                w.synced = true;
                w.relisting = false;
                w.missing = false;
                w.last_event = Some(now);
                w.failing_since = None;
            }
            Ev::Missing => {
                T::table(&mut self.tables).seen.remove(&res);
                self.sweep::<T>(res, |_| true);
                let w = &mut self.watches[res.index()];
                w.synced = true;
                w.relisting = false;
                w.missing = true;
                w.failing_since = None;
                *w.errors.entry("not_found").or_default() += 1;
            }
            Ev::Error { kind } => {
                let w = &mut self.watches[res.index()];
                *w.errors.entry(kind).or_default() += 1;
                if kind != "expired" {
                    w.failing_since.get_or_insert(now);
                    w.last_error = Some(now);
                }
            }
        }
    }

    fn apply<T: Slot>(&mut self, res: Res, c: Converted<T>) {
        let node = self.node.as_str();
        let latest = &*self.latest;
        let table = T::table(&mut self.tables);
        let current_owner = table.get(latest, &c.key).map(|v| v.owner(node));
        match c.result {
            Ok(value) => {
                table.invalid.remove(&c.key);
                let owner = value.owner(node);
                debug_assert_eq!(owner, res, "watch tasks only send their own objects");
                match current_owner {
                    Some(o) if o != owner && o.priority() > owner.priority() => {
                        table.shadow.insert(c.key, value);
                    }
                    Some(o) if o != owner => {
                        // The higher-priority object replaces the other, kept aside.
                        if let Some(previous) = table.get(latest, &c.key).cloned() {
                            table.shadow.insert(c.key.clone(), previous);
                        }
                        table.set(latest, node, c.key, Some(value), &mut self.counts);
                    }
                    _ => {
                        table.set(latest, node, c.key, Some(value), &mut self.counts);
                    }
                }
            }
            Err(errors) => {
                let kept = current_owner == Some(res);
                let reported = table.invalid.get(&c.key);
                if reported != Some(&(res, c.version.clone())) {
                    let id = T::id(&c.key);
                    let outcome = if kept {
                        "keeping its last valid version"
                    } else {
                        "left out"
                    };
                    for e in &errors {
                        tracing::error!("{id}: {}: {} ({outcome})", e.field, e.message);
                    }
                }
                table.invalid.insert(c.key, (res, c.version));
            }
        }
    }

    /// `key` is gone from watch `res`.
    fn remove<T: Slot>(&mut self, res: Res, key: &T::Key) {
        let node = self.node.as_str();
        let latest = &*self.latest;
        let table = T::table(&mut self.tables);
        if table.invalid.get(key).is_some_and(|(r, _)| *r == res) {
            table.invalid.remove(key);
        }
        if table.shadow.get(key).is_some_and(|v| v.owner(node) == res) {
            table.shadow.remove(key);
        }
        if table.get(latest, key).map(|v| v.owner(node)) == Some(res) {
            let replacement = table.shadow.remove(key);
            table.set(latest, node, key.clone(), replacement, &mut self.counts);
        }
    }

    /// Remove the objects of watch `res` whose key satisfies `gone`.
    fn sweep<T: Slot>(&mut self, res: Res, gone: impl Fn(&T::Key) -> bool) {
        let node = self.node.as_str();
        let table = T::table_ref(&self.tables);
        let mut keys: Vec<T::Key> = table
            .live(&self.latest)
            .filter(|(k, v)| v.owner(node) == res && gone(k))
            .map(|(k, _)| k.clone())
            .collect();
        keys.extend(
            table
                .shadow
                .iter()
                .filter(|(k, v)| v.owner(node) == res && gone(k))
                .map(|(k, _)| k.clone()),
        );
        keys.extend(
            table
                .invalid
                .iter()
                .filter(|(k, (r, _))| *r == res && gone(k))
                .map(|(k, _)| k.clone()),
        );
        for key in keys {
            self.remove::<T>(res, &key);
        }
    }

    /// Build the snapshot of the current state and make it the latest.
    pub fn publish(&mut self) -> (Arc<Snapshot>, Build) {
        let latest = &*self.latest;
        let t = &mut self.tables;
        let (next, build) = if let Some(s) = self.spare.as_mut().and_then(Arc::get_mut) {
            t.namespaces.catch_up(s, latest);
            t.pods.catch_up(s, latest);
            t.network_policies.catch_up(s, latest);
            t.runtime_policies.catch_up(s, latest);
            t.services.catch_up(s, latest);
            t.endpoint_slices.catch_up(s, latest);
            let spare = self.spare.take().expect("reused above");
            (spare, Build::Incremental)
        } else {
            // Still held elsewhere (or none yet): it is dropped here, freed by its holder.
            self.spare = None;
            let mut s = latest.clone();
            t.namespaces.apply_pending(&mut s);
            t.pods.apply_pending(&mut s);
            t.network_policies.apply_pending(&mut s);
            t.runtime_policies.apply_pending(&mut s);
            t.services.apply_pending(&mut s);
            t.endpoint_slices.apply_pending(&mut s);
            (Arc::new(s), Build::Full)
        };
        self.spare = Some(std::mem::replace(&mut self.latest, next.clone()));
        (next, build)
    }
}

#[cfg(test)]
mod tests;
