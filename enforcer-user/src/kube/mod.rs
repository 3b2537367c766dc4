//! Kubernetes mode: the cluster state from the API server.
//!
//! Seven watches (kube-runtime's watcher: paginated list, then watch from the list's
//! resourceVersion with bookmarks, relist on 410 Gone, default backoff on errors):
//!
//! | watch | request | kept |
//! | --- | --- | --- |
//! | this node's pods | `/api/v1/pods?fieldSelector=spec.nodeName=NODE` | the endpoints |
//! | all pods | `/api/v1/pods` (this node's are left to the first watch) | the peers |
//! | namespaces | `/api/v1/namespaces` | |
//! | network policies | `/apis/networking.k8s.io/v1/networkpolicies` | |
//! | runtime policies | `/apis/enforcer.dev/v1alpha1/runtimepolicies` | optional CRD |
//! | services | `/api/v1/services` | Service frontends |
//! | endpoint slices | `/apis/discovery.k8s.io/v1/endpointslices` | their backends |
//!
//! Objects are converted to the model as they arrive (pods decoded into a lean type first)
//! and only the model is kept; invalid objects are logged (kind, namespace/name, field) and
//! left out, or keep their last valid version. Nothing is published until every watch has
//! completed its initial list (a missing RuntimePolicy CRD counts as an empty list); then
//! changes are coalesced for [`Tuning::debounce`] into one snapshot, built incrementally
//! (see [`store`]).
//!
//! Metrics (`resource` is `local_pods`, `pods`, `namespaces`, `networkpolicies`,
//! `runtimepolicies`, `services` or `endpointslices`):
//! - `enforcer_kube_objects{resource}`: objects held (valid, converted);
//! - `enforcer_kube_invalid_objects{resource}`: objects left out or held at their last
//!   valid version;
//! - `enforcer_kube_synced{resource}`: 1 once the initial list is complete;
//! - `enforcer_kube_resource_installed{resource}`: 0 while the optional resource is not
//!   served;
//! - `enforcer_kube_watch_restarts_total{resource}`: relists after the first list (expired
//!   resourceVersion, watch that could not resume);
//! - `enforcer_kube_watch_errors_total{resource,error}`: errors by kind (`list`,
//!   `watch_start`, `expired`, `watch_event`, `watch_stream`, `no_resource_version`,
//!   `not_found`), each followed by the backoff;
//! - `enforcer_kube_events_total{resource,type}`: objects applied and deletions;
//! - `enforcer_kube_last_event_timestamp_seconds{resource}`: when the watch last delivered
//!   something;
//! - `enforcer_kube_snapshots_total{build}`: snapshots published (`incremental` or `full`),
//!   `enforcer_kube_snapshot_build_seconds`: time to build the last one.

mod objects;
pub mod removal;
mod store;
mod watch;

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use ::kube::{
    Api, Client, Config,
    api::DynamicObject,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{utils::Backoff, watcher},
};
use anyhow::{Context, bail};
use k8s_openapi::api::{core::v1 as core, networking::v1 as net};
use tokio::{sync::mpsc, task::JoinSet};

use crate::agent::{metrics::Metrics, source::SnapshotTx};
use objects::{PodLite, Res, Watched, runtime_policy_resource};
use store::{Build, Store};
use watch::{BackoffFactory, Filter, Msg, Payload, Spec, Wrap};

/// Timing of the source; [`Tuning::default`] is what the agent uses.
#[derive(Clone)]
pub struct Tuning {
    /// Changes are coalesced for this long (from the first one) into one snapshot.
    pub debounce: Duration,
    /// Objects per list page.
    pub page_size: u32,
    /// The backoff after watcher errors (default: [`QuickBackoff`], 0.5 s doubling to 5 s,
    /// jittered, reset by the first successful answer).
    pub backoff: BackoffFactory,
    /// Pause before restarting a watch that cannot resume.
    pub restart_delay: Duration,
    /// How often metrics are updated while nothing is published.
    pub metrics_interval: Duration,
    /// A failing watch counts as recovered after this long without a new error (a watch
    /// that resumed delivers nothing until something changes); at least twice the longest
    /// backoff.
    pub quiet_after_errors: Duration,
}

/// The watches' backoff after errors: 0.5 s doubling to 5 s, with up to 20 % of jitter,
/// back to the start after a successful answer. client-go's reflector waits up to 30 s to
/// spare a struggling API server; a node agent that enforces the last known state while
/// the API server is away must converge within seconds once it is back, so it retries at
/// most every 5 s (7 watches per node: about 1.4 requests per second per node during an
/// outage).
pub struct QuickBackoff {
    next: Duration,
}

impl QuickBackoff {
    const MIN: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(5);
}

impl Default for QuickBackoff {
    fn default() -> Self {
        Self { next: Self::MIN }
    }
}

impl Iterator for QuickBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let base = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        // Jitter from the clock's nanoseconds: enough to keep nodes from retrying in step.
        let nanos = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        Some(base + base.mul_f64((nanos % 1000) as f64 / 1000.0 * 0.2))
    }
}

impl Backoff for QuickBackoff {
    fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(100),
            page_size: 500,
            backoff: Arc::new(|| Box::new(QuickBackoff::default()) as Box<dyn Backoff>),
            restart_delay: Duration::from_secs(1),
            metrics_interval: Duration::from_secs(5),
            quiet_after_errors: QuickBackoff::MAX * 2,
        }
    }
}

/// The client for `kubeconfig` (its current context), by default the in-cluster
/// configuration (service account token and CA, `KUBERNETES_SERVICE_HOST`/`_PORT`).
pub async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading the kubeconfig {}", path.display()))?
        }
        None => Config::incluster().context(
            "loading the in-cluster configuration (KUBERNETES_SERVICE_HOST/PORT and the \
             service account); outside a cluster, pass --kubeconfig",
        )?,
    };
    tracing::info!("Kubernetes API server: {}", config.cluster_url);
    Client::try_from(config).context("building the Kubernetes client")
}

/// Watch the API server and publish snapshots until an unrecoverable error (or until every
/// receiver of `tx` is gone, which returns `Ok`).
pub async fn run(
    client: Client,
    node: String,
    tx: SnapshotTx,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    run_with_client(client, node, tx, metrics, Tuning::default()).await
}

/// A node name is used in a field selector: refuse what cannot be one.
fn check_node_name(node: &str) -> anyhow::Result<()> {
    let valid = !node.is_empty()
        && node.len() <= 253
        && node
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.');
    if !valid {
        bail!(
            "invalid node name {node:?}: expected a DNS subdomain (--node, or NODE_NAME from \
             the downward API: spec.nodeName)"
        );
    }
    Ok(())
}

/// [`run`] with a given client and timing (tests point it at a fake API server).
pub async fn run_with_client(
    client: Client,
    node: String,
    tx: SnapshotTx,
    metrics: Arc<Metrics>,
    tuning: Tuning,
) -> anyhow::Result<()> {
    check_node_name(&node)?;
    let (mtx, mut mrx) = mpsc::channel::<Msg>(1024);
    let config = watcher::Config::default().page_size(tuning.page_size);
    let mut spawner = Spawner {
        tasks: JoinSet::new(),
        tx: mtx,
        tuning: &tuning,
    };
    let local = node.clone();
    spawner.watch(
        Res::LocalPods,
        Api::<PodLite>::all(client.clone()),
        config.clone().fields(&format!("spec.nodeName={node}")),
        Box::new(move |p| p.node_name_is(&local)),
    );
    let local = node.clone();
    spawner.watch(
        Res::Pods,
        Api::<PodLite>::all(client.clone()),
        config.clone(),
        Box::new(move |p| !p.node_name_is(&local)),
    );
    spawner.watch(
        Res::Namespaces,
        Api::<core::Namespace>::all(client.clone()),
        config.clone(),
        Box::new(|_| true),
    );
    spawner.watch(
        Res::NetworkPolicies,
        Api::<net::NetworkPolicy>::all(client.clone()),
        config.clone(),
        Box::new(|_| true),
    );
    spawner.watch(
        Res::RuntimePolicies,
        Api::<DynamicObject>::all_with(client.clone(), &runtime_policy_resource()),
        config.clone(),
        Box::new(|_| true),
    );
    spawner.watch(
        Res::Services,
        Api::<core::Service>::all(client.clone()),
        config.clone(),
        Box::new(|_| true),
    );
    spawner.watch(
        Res::EndpointSlices,
        Api::<k8s_openapi::api::discovery::v1::EndpointSlice>::all(client.clone()),
        config,
        Box::new(|_| true),
    );
    // Only the tasks hold senders now; the set aborts every watch when dropped.
    let Spawner { mut tasks, .. } = spawner;
    tracing::info!("watching the API server for node {node}");

    let mut store = Store::new(&node);
    let mut report = Report::default();
    let mut published = false;
    // When the pending changes are published.
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(tuning.metrics_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let mut degraded = Degraded {
        since: None,
        quiet: tuning.quiet_after_errors,
    };
    degraded.update(&store, &metrics);
    loop {
        tokio::select! {
            msg = mrx.recv() => {
                let Some(msg) = msg else {
                    bail!("the watch tasks stopped");
                };
                dispatch(&mut store, msg);
                // Take what is already queued before deciding (a list page, a burst),
                // boundedly so that a long initial list does not starve the other arms.
                for _ in 0..1024 {
                    let Ok(msg) = mrx.try_recv() else { break };
                    dispatch(&mut store, msg);
                }
                degraded.update(&store, &metrics);
                if !store.synced() {
                    continue;
                }
                if !published {
                    tracing::info!(
                        "initial lists complete in {:?}: {} local pods, {} other pods, {} \
                         namespaces, {} network policies, {} runtime policies, {} services, \
                         {} endpoint slices",
                        started.elapsed(),
                        store.objects(Res::LocalPods),
                        store.objects(Res::Pods),
                        store.objects(Res::Namespaces),
                        store.objects(Res::NetworkPolicies),
                        store.objects(Res::RuntimePolicies),
                        store.objects(Res::Services),
                        store.objects(Res::EndpointSlices),
                    );
                    published = true;
                    if !publish(&mut store, &tx, &metrics, &mut report) {
                        return Ok(());
                    }
                } else if store.dirty() && deadline.is_none() {
                    deadline = Some(tokio::time::Instant::now() + tuning.debounce);
                }
            }
            _ = sleep_until(deadline), if deadline.is_some() => {
                deadline = None;
                if store.dirty() && !publish(&mut store, &tx, &metrics, &mut report) {
                    return Ok(());
                }
            }
            _ = tick.tick() => {
                degraded.update(&store, &metrics);
                report.update(&store, &metrics);
            }
            ended = tasks.join_next() => {
                // Watch tasks only end when the store is gone: this one failed.
                bail!("a watch task stopped: {ended:?}");
            }
            _ = tx.closed() => return Ok(()),
        }
    }
}

/// Starts the watch tasks.
struct Spawner<'a> {
    tasks: JoinSet<()>,
    tx: mpsc::Sender<Msg>,
    tuning: &'a Tuning,
}

impl Spawner<'_> {
    fn watch<K: Watched>(&mut self, res: Res, api: Api<K>, config: watcher::Config, keep: Filter<K>)
    where
        K::Model: Wrap,
    {
        self.tasks.spawn(watch::run(
            Spec {
                res,
                api,
                config,
                keep,
                backoff: self.tuning.backoff.clone(),
                restart_delay: self.tuning.restart_delay,
            },
            self.tx.clone(),
        ));
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn dispatch(store: &mut Store, msg: Msg) {
    match msg.payload {
        Payload::Namespace(ev) => store.handle(msg.res, ev),
        Payload::Pod(ev) => store.handle(msg.res, ev),
        Payload::NetworkPolicy(ev) => store.handle(msg.res, ev),
        Payload::RuntimePolicy(ev) => store.handle(msg.res, ev),
        Payload::Service(ev) => store.handle(msg.res, ev),
        Payload::EndpointSlice(ev) => store.handle(msg.res, ev),
    }
}

/// Publish the current state; false when nobody listens any more.
fn publish(store: &mut Store, tx: &SnapshotTx, metrics: &Metrics, report: &mut Report) -> bool {
    let start = Instant::now();
    let (snapshot, build) = store.publish();
    let elapsed = start.elapsed();
    let sent = tx.send(Some(snapshot)).is_ok();
    match build {
        Build::Incremental => report.incremental += 1,
        Build::Full => report.full += 1,
    }
    metrics.set(
        "enforcer_kube_snapshot_build_seconds",
        "Time to build the last snapshot of the cluster state.",
        &[],
        elapsed.as_secs_f64(),
    );
    report.update(store, metrics);
    sent
}

/// Whether the API server answers: `enforcer_kube_degraded` (1 while a watch keeps
/// failing; the agent's /readyz says "degraded" then) and a log line at each transition.
struct Degraded {
    since: Option<SystemTime>,
    quiet: Duration,
}

impl Degraded {
    fn update(&mut self, store: &Store, m: &Metrics) {
        let now = store.failing(self.quiet);
        match (self.since, now) {
            (None, Some((res, _))) => tracing::warn!(
                "the API server does not answer ({res} watch failing): enforcing the last \
                 state received; pods not known yet stay denied (unclassified)"
            ),
            (Some(t0), None) => tracing::info!(
                "the API server answers again after {:?}",
                SystemTime::now().duration_since(t0).unwrap_or_default()
            ),
            _ => {}
        }
        self.since = now.map(|(_, t)| t);
        m.set(
            "enforcer_kube_degraded",
            "1 while the API server does not answer a watch: the last state received is \
             enforced.",
            &[],
            if self.since.is_some() { 1.0 } else { 0.0 },
        );
        if let Some(t) = self.since.and_then(|t| t.duration_since(UNIX_EPOCH).ok()) {
            m.set(
                "enforcer_kube_degraded_since_timestamp_seconds",
                "Unix time since which the API server has not answered (while degraded).",
                &[],
                t.as_secs_f64(),
            );
        }
    }
}

/// Metrics, set from the store's counters (cheap: a few dozen values).
#[derive(Default)]
struct Report {
    incremental: u64,
    full: u64,
}

impl Report {
    fn update(&self, store: &Store, m: &Metrics) {
        for (build, n) in [("incremental", self.incremental), ("full", self.full)] {
            m.set_counter(
                "enforcer_kube_snapshots_total",
                "Snapshots of the cluster state published, by how they were built.",
                &[("build", build)],
                n as f64,
            );
        }
        for res in Res::ALL {
            let l = [("resource", res.name())];
            let s = store.stats(res);
            m.set(
                "enforcer_kube_objects",
                "Objects held from the API server (valid, converted to the model).",
                &l,
                store.objects(res) as f64,
            );
            m.set(
                "enforcer_kube_invalid_objects",
                "Invalid objects, left out or held at their last valid version.",
                &l,
                store.invalid(res) as f64,
            );
            m.set(
                "enforcer_kube_synced",
                "1 once the resource's initial list is complete.",
                &l,
                if s.synced { 1.0 } else { 0.0 },
            );
            if res.optional() {
                m.set(
                    "enforcer_kube_resource_installed",
                    "0 while an optional resource (a CRD) is not served by the API server.",
                    &l,
                    if s.missing { 0.0 } else { 1.0 },
                );
            }
            m.set_counter(
                "enforcer_kube_watch_restarts_total",
                "Relists after the initial list (expired resourceVersion, unresumable watch).",
                &l,
                s.restarts as f64,
            );
            for (kind, n) in [("applied", s.applied), ("deleted", s.deleted)] {
                m.set_counter(
                    "enforcer_kube_events_total",
                    "Objects received (listed or watched) and deletions.",
                    &[("resource", res.name()), ("type", kind)],
                    n as f64,
                );
            }
            for (kind, n) in &s.errors {
                m.set_counter(
                    "enforcer_kube_watch_errors_total",
                    "Watch errors by kind; the watch retries after a backoff.",
                    &[("resource", res.name()), ("error", kind)],
                    *n as f64,
                );
            }
            if let Some(t) = s.last_event.and_then(|t| t.duration_since(UNIX_EPOCH).ok()) {
                m.set(
                    "enforcer_kube_last_event_timestamp_seconds",
                    "Unix time of the last object or list completion from the watch.",
                    &l,
                    t.as_secs_f64(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
