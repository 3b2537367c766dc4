//! Where the agent's picture of the cluster comes from.
//!
//! A source publishes complete [`Snapshot`]s on a `watch` channel: `None` until its initial
//! state is known (the agent is not ready before), then every new state. Consumers always
//! see the latest snapshot; intermediate ones may be skipped, which is what a reconciler
//! wants. Two sources exist: a manifests directory (standalone mode, [`manifests`]) and the
//! Kubernetes API (`crate::kube`).

use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use tokio::sync::{mpsc, watch};

use super::metrics::Metrics;
use crate::{
    manifests,
    model::{Cluster, ObjectRef},
    runtime_policy::RuntimePolicy,
};

/// Everything the compilers read.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub cluster: Cluster,
    pub runtime_policies: BTreeMap<ObjectRef, RuntimePolicy>,
}

pub type SnapshotTx = watch::Sender<Option<Arc<Snapshot>>>;
pub type SnapshotRx = watch::Receiver<Option<Arc<Snapshot>>>;

pub fn channel() -> (SnapshotTx, SnapshotRx) {
    watch::channel(None)
}

fn snapshot(store: &manifests::Store) -> Arc<Snapshot> {
    Arc::new(Snapshot {
        cluster: store.cluster().clone(),
        runtime_policies: store
            .runtime_policies()
            .iter()
            .map(|(k, v)| (k.clone(), v.policy.clone()))
            .collect(),
    })
}

/// Standalone mode: load `dir`, publish, and publish again whenever a file change changes
/// the result. Bad files are reported (file, object, field) and the rest stays in force.
pub async fn manifests(dir: PathBuf, tx: SnapshotTx, metrics: Arc<Metrics>) {
    let mut store = manifests::Store::new();
    let report_errors = |errors: &[manifests::ManifestError]| {
        for e in errors {
            tracing::error!("{e}");
        }
        metrics.set(
            "enforcer_manifest_errors",
            "Errors in the last load of the manifests directory.",
            &[],
            errors.len() as f64,
        );
    };
    let report = store.reload(&dir);
    report_errors(&report.errors);
    if tx.send(Some(snapshot(&store))).is_err() {
        return;
    }
    let (ntx, mut nrx) = mpsc::channel(4);
    tokio::spawn(manifests::watch(dir.clone(), ntx));
    while nrx.recv().await.is_some() {
        let report = store.reload(&dir);
        report_errors(&report.errors);
        if report.changed || report.runtime_changed {
            tracing::info!("manifests changed");
            if tx.send(Some(snapshot(&store))).is_err() {
                return;
            }
        }
    }
}
