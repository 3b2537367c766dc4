//! One task per watch: kube's watcher (list, then watch from the list's resourceVersion,
//! with bookmarks; relist on 410 Gone; re-watch from the last version when a stream ends),
//! behind a backoff, converting every object as it arrives and sending only the model to
//! the store.
//!
//! What the watcher does not cover by itself:
//! - A 404 on the list of an optional resource (the RuntimePolicy CRD is not installed) is
//!   reported as [`Ev::Missing`] ("no objects"); the watcher keeps retrying the list with
//!   its backoff, so installing the CRD later is noticed.
//! - A watch *request* refused with 410 or 404 (rather than a 410 `ERROR` event in the
//!   stream, which is how the API server reports an expired resourceVersion) would make
//!   kube's watcher retry the same resourceVersion forever; the watcher is restarted
//!   instead, which relists.

use std::{pin::pin, sync::Arc, time::Duration};

use ::kube::{
    Api,
    runtime::{WatchStreamExt, utils::Backoff, watcher},
};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{
    objects::{Res, Watched},
    store::{Converted, Ev, Slot},
};
use crate::{model, runtime_policy::RuntimePolicy};

/// A model event of one watch, for the store task.
#[derive(Debug)]
pub enum Payload {
    Namespace(Ev<model::Namespace>),
    Pod(Ev<model::Pod>),
    NetworkPolicy(Ev<model::NetworkPolicy>),
    RuntimePolicy(Ev<RuntimePolicy>),
    Service(Ev<model::Service>),
    EndpointSlice(Ev<model::EndpointSlice>),
}

/// How a model type travels to the store.
pub trait Wrap: Slot {
    fn wrap(ev: Ev<Self>) -> Payload;
}

impl Wrap for model::Namespace {
    fn wrap(ev: Ev<Self>) -> Payload {
        Payload::Namespace(ev)
    }
}
impl Wrap for model::Pod {
    fn wrap(ev: Ev<Self>) -> Payload {
        Payload::Pod(ev)
    }
}
impl Wrap for model::NetworkPolicy {
    fn wrap(ev: Ev<Self>) -> Payload {
        Payload::NetworkPolicy(ev)
    }
}
impl Wrap for RuntimePolicy {
    fn wrap(ev: Ev<Self>) -> Payload {
        Payload::RuntimePolicy(ev)
    }
}
impl Wrap for model::Service {
    fn wrap(ev: Ev<Self>) -> Payload {
        Payload::Service(ev)
    }
}
impl Wrap for model::EndpointSlice {
    fn wrap(ev: Ev<Self>) -> Payload {
        Payload::EndpointSlice(ev)
    }
}

#[derive(Debug)]
pub struct Msg {
    pub res: Res,
    pub payload: Payload,
}

/// Makes the backoff applied after each watcher error.
pub type BackoffFactory = Arc<dyn Fn() -> Box<dyn Backoff> + Send + Sync>;

/// Which objects of the stream belong to this watch (pods: by node).
pub type Filter<K> = Box<dyn Fn(&K) -> bool + Send + Sync>;

/// Everything one watch task needs.
pub struct Spec<K: Watched> {
    pub res: Res,
    pub api: Api<K>,
    pub config: watcher::Config,
    pub keep: Filter<K>,
    pub backoff: BackoffFactory,
    /// Pause before restarting a watcher that cannot resume.
    pub restart_delay: Duration,
}

/// What to do with a watcher error.
enum Verdict {
    /// Count it; the watcher recovers by itself (after the backoff).
    Retry(&'static str),
    /// The optional resource is not served: no objects (the list is retried).
    Missing,
    /// The watcher would retry a watch that cannot succeed: start it again (relist).
    Restart(&'static str),
}

fn api_code(e: &::kube::Error) -> Option<u16> {
    match e {
        ::kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

fn classify(res: Res, e: &watcher::Error) -> Verdict {
    use watcher::Error as E;
    match e {
        E::InitialListFailed(e) if res.optional() && api_code(e) == Some(404) => Verdict::Missing,
        E::InitialListFailed(_) => Verdict::Retry("list"),
        E::WatchStartFailed(e) if matches!(api_code(e), Some(404 | 410)) => {
            Verdict::Restart("watch_start")
        }
        E::WatchStartFailed(_) => Verdict::Retry("watch_start"),
        E::WatchError(status) if status.code == 410 => Verdict::Retry("expired"),
        E::WatchError(_) => Verdict::Retry("watch_event"),
        E::WatchFailed(_) => Verdict::Retry("watch_stream"),
        E::NoResourceVersion => Verdict::Retry("no_resource_version"),
    }
}

fn converted<K: Watched>(obj: K) -> Ev<K::Model> {
    let key = obj.key();
    let version = obj.meta().resource_version.clone().unwrap_or_default();
    Ev::Apply(Converted {
        key,
        version,
        result: obj.into_model(),
    })
}

/// Run one watch until the store goes away.
pub async fn run<K>(spec: Spec<K>, tx: mpsc::Sender<Msg>)
where
    K: Watched,
    K::Model: Wrap,
{
    let res = spec.res;
    let send = |ev: Ev<K::Model>| {
        tx.send(Msg {
            res,
            payload: <K::Model as Wrap>::wrap(ev),
        })
    };
    // The optional resource is known to be missing (logged once per transition).
    let mut missing = false;
    loop {
        let stream = watcher(spec.api.clone(), spec.config.clone()).backoff((spec.backoff)());
        let mut stream = pin!(stream);
        while let Some(item) = stream.next().await {
            let ev = match item {
                Ok(watcher::Event::Init) => Ev::Init,
                Ok(watcher::Event::InitApply(obj)) => {
                    if !(spec.keep)(&obj) {
                        continue;
                    }
                    converted(obj)
                }
                Ok(watcher::Event::Apply(obj)) => {
                    if (spec.keep)(&obj) {
                        converted(obj)
                    } else {
                        Ev::Delete(obj.key())
                    }
                }
                Ok(watcher::Event::Delete(obj)) => Ev::Delete(obj.key()),
                Ok(watcher::Event::InitDone) => {
                    if missing {
                        tracing::info!("{res}: the resource is served now; watching it");
                        missing = false;
                    }
                    Ev::InitDone
                }
                Err(e) => match classify(res, &e) {
                    Verdict::Missing => {
                        if !missing {
                            tracing::warn!(
                                "{res}: not served by the API server (is the RuntimePolicy \
                                 CRD runtimepolicies.enforcer.dev installed?): enforcing no \
                                 RuntimePolicies, checking again in the background"
                            );
                            missing = true;
                        }
                        Ev::Missing
                    }
                    Verdict::Retry("expired") => {
                        tracing::info!("{res}: resourceVersion expired (410 Gone): relisting");
                        Ev::Error { kind: "expired" }
                    }
                    Verdict::Retry(kind) => {
                        tracing::warn!("{res}: {e}; retrying");
                        Ev::Error { kind }
                    }
                    Verdict::Restart(kind) => {
                        tracing::warn!("{res}: {e}; restarting the watch with a new list");
                        if send(Ev::Error { kind }).await.is_err() {
                            return;
                        }
                        break;
                    }
                },
            };
            if send(ev).await.is_err() {
                return;
            }
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(spec.restart_delay).await;
    }
}
