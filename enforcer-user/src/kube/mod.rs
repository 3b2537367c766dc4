//! Kubernetes mode: the cluster state from the API server.

use std::{path::PathBuf, sync::Arc};

use crate::agent::{metrics::Metrics, source::SnapshotTx};

/// Watch the API server and publish snapshots until an unrecoverable error.
pub async fn run(
    _node: String,
    _kubeconfig: Option<PathBuf>,
    _tx: SnapshotTx,
    _metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    anyhow::bail!("Kubernetes mode is not implemented yet; use --manifests")
}
