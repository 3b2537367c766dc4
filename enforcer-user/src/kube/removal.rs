//! Telling an uninstall from a restart when the agent is told to stop.
//!
//! SIGTERM reaches the agent for a rolling update, a pod deleted by hand, a node being
//! drained or shut down, and for an uninstall (its DaemonSet or its namespace deleted). In
//! the first cases the pinned programs must keep enforcing the last state until the next
//! agent takes over: that is the zero-gap restart. In the last they must go with the
//! agent: with `--unclassified deny`, programs left behind would cut off every pod started
//! afterwards, with no agent left to classify it.
//!
//! The evidence comes from two places:
//! - watches of the agent's namespace and of the DaemonSet that owns its pod, started with
//!   the agent. `kubectl delete -k deploy/` deletes the namespace, the RBAC and the
//!   DaemonSet in one sweep, so by the time the pod gets SIGTERM the agent may no longer be
//!   allowed to read anything; an established watch keeps delivering (the API server
//!   authorizes a request when it starts), so the deletion has been seen;
//! - a fresh read of both objects when SIGTERM arrives (bounded in time).
//!
//! The DaemonSet gone or being deleted, or the namespace being deleted, in either source:
//! uninstall. Anything else, including an API server that does not answer or refuses us:
//! keep enforcing (fail closed) and say how to clean up if an uninstall was meant.

use std::{
    pin::pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use ::kube::{
    Api, Client,
    runtime::{utils::Backoff, watcher},
};
use futures_util::StreamExt;
use k8s_openapi::{
    Metadata, api::apps::v1::DaemonSet, api::core::v1 as core,
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use super::QuickBackoff;

/// What is known about one object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Presence {
    #[default]
    Unknown,
    Present,
    /// Its deletionTimestamp is set (foreground deletion, a terminating namespace).
    Deleting,
    /// Not found.
    Gone,
}

impl Presence {
    fn of(meta: &ObjectMeta) -> Self {
        if meta.deletion_timestamp.is_some() {
            Presence::Deleting
        } else {
            Presence::Present
        }
    }

    fn removed(self) -> bool {
        matches!(self, Presence::Deleting | Presence::Gone)
    }
}

/// The agent's namespace and DaemonSet, as far as known.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub namespace: Presence,
    pub daemonset: Presence,
}

/// What to do with the pinned state when the agent stops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Detach everything and remove the pins: the agent is being uninstalled.
    Uninstall(String),
    /// Leave the programs enforcing the last state for the next agent.
    Keep(String),
}

/// The decision from what the watches saw and what a fresh read found.
pub fn decide(who: &Owner, watched: &Seen, fresh: &Seen) -> Decision {
    let ns = &who.namespace;
    for (seen, how) in [(fresh, "read at SIGTERM"), (watched, "seen by the watch")] {
        if seen.namespace.removed() {
            return Decision::Uninstall(format!("namespace {ns} is being deleted ({how})"));
        }
        if seen.daemonset.removed() {
            return Decision::Uninstall(format!(
                "DaemonSet {ns}/{} is {} ({how})",
                who.daemonset,
                if seen.daemonset == Presence::Gone {
                    "deleted"
                } else {
                    "being deleted"
                }
            ));
        }
    }
    if fresh.daemonset == Presence::Present && fresh.namespace == Presence::Present {
        Decision::Keep(format!(
            "DaemonSet {ns}/{} is in place: a restart or an update",
            who.daemonset
        ))
    } else {
        Decision::Keep(format!(
            "could not tell whether DaemonSet {ns}/{} is being removed (namespace {:?}, \
             DaemonSet {:?}); failing closed",
            who.daemonset, fresh.namespace, fresh.daemonset
        ))
    }
}

/// The agent's pod and its owner.
#[derive(Clone, Debug)]
pub struct Owner {
    pub namespace: String,
    pub pod: String,
    pub daemonset: String,
}

/// Follows the agent's namespace and DaemonSet from start-up on (see the module docs).
pub struct Removal {
    client: Client,
    namespace: String,
    pod: String,
    owner: Arc<Mutex<Option<Owner>>>,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Removal {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Removal {
    /// Starts following the namespace and the DaemonSet that owns pod `namespace/pod`.
    pub fn spawn(client: Client, namespace: String, pod: String) -> Self {
        let owner = Arc::new(Mutex::new(None));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let task = tokio::spawn(follow(
            client.clone(),
            namespace.clone(),
            pod.clone(),
            owner.clone(),
            seen.clone(),
        ));
        Self {
            client,
            namespace,
            pod,
            owner,
            seen,
            task,
        }
    }

    /// Decides, reading the objects once more within `timeout`.
    pub async fn decide(&self, timeout: Duration) -> Decision {
        let read = async {
            let known = self.owner.lock().unwrap().clone();
            let owner = match known {
                Some(o) => Some(o),
                None => owner_of(&self.client, &self.namespace, &self.pod)
                    .await
                    .ok()
                    .flatten(),
            };
            let Some(owner) = owner else {
                return (None, Seen::default());
            };
            let ns = Api::<core::Namespace>::all(self.client.clone());
            let ds = Api::<DaemonSet>::namespaced(self.client.clone(), &owner.namespace);
            let (n, d) = tokio::join!(ns.get_opt(&owner.namespace), ds.get_opt(&owner.daemonset));
            let fresh = Seen {
                namespace: presence(n),
                daemonset: presence(d),
            };
            (Some(owner), fresh)
        };
        let (owner, fresh) = tokio::time::timeout(timeout, read)
            .await
            .unwrap_or((None, Seen::default()));
        let owner = owner.or_else(|| self.owner.lock().unwrap().clone());
        let watched = self.seen.lock().unwrap().clone();
        match owner {
            Some(o) => decide(&o, &watched, &fresh),
            None => Decision::Keep(format!(
                "the DaemonSet owning pod {}/{} is not known (the API server did not answer \
                 in {timeout:?}, or the pod has no DaemonSet owner); failing closed",
                self.namespace, self.pod
            )),
        }
    }
}

fn presence<K: Metadata<Ty = ObjectMeta>>(r: Result<Option<K>, ::kube::Error>) -> Presence {
    match r {
        Ok(Some(o)) => Presence::of(o.metadata()),
        Ok(None) => Presence::Gone,
        Err(_) => Presence::Unknown,
    }
}

/// The DaemonSet controlling the pod, from its ownerReferences.
async fn owner_of(
    client: &Client,
    namespace: &str,
    pod: &str,
) -> Result<Option<Owner>, ::kube::Error> {
    let p = Api::<core::Pod>::namespaced(client.clone(), namespace)
        .get(pod)
        .await?;
    Ok(p.metadata
        .owner_references
        .unwrap_or_default()
        .into_iter()
        .find(|r| r.kind == "DaemonSet" && r.controller == Some(true))
        .map(|r| Owner {
            namespace: namespace.to_string(),
            pod: pod.to_string(),
            daemonset: r.name,
        }))
}

async fn follow(
    client: Client,
    namespace: String,
    pod: String,
    owner_slot: Arc<Mutex<Option<Owner>>>,
    seen: Arc<Mutex<Seen>>,
) {
    let mut backoff = QuickBackoff::default();
    let owner = loop {
        match owner_of(&client, &namespace, &pod).await {
            Ok(Some(o)) => break o,
            Ok(None) => {
                tracing::warn!(
                    "pod {namespace}/{pod} has no DaemonSet owner: when it stops, its pinned \
                     programs stay (remove them with `enforcer uninstall`)"
                );
                return;
            }
            Err(e) => {
                tracing::debug!("reading pod {namespace}/{pod}: {e}");
                tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(5))).await;
            }
        }
    };
    tracing::info!(
        "following namespace {namespace} and DaemonSet {namespace}/{}: their deletion \
         uninstalls this node's programs when the agent stops",
        owner.daemonset
    );
    *owner_slot.lock().unwrap() = Some(owner.clone());
    let by_name = |name: &str| watcher::Config::default().fields(&format!("metadata.name={name}"));
    let ns = watch_one(
        Api::<core::Namespace>::all(client.clone()),
        by_name(&namespace),
        seen.clone(),
        |s, p| s.namespace = p,
    );
    let ds = watch_one(
        Api::<DaemonSet>::namespaced(client, &namespace),
        by_name(&owner.daemonset),
        seen,
        |s, p| s.daemonset = p,
    );
    tokio::join!(ns, ds);
}

/// Follows one object selected by name; errors are retried after the backoff.
async fn watch_one<K>(
    api: Api<K>,
    config: watcher::Config,
    seen: Arc<Mutex<Seen>>,
    set: impl Fn(&mut Seen, Presence),
) where
    K: ::kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K: Metadata<Ty = ObjectMeta>,
{
    let mut backoff = QuickBackoff::default();
    let mut stream = pin!(watcher(api, config));
    // Whether the object appeared in the list being received.
    let mut listed = false;
    while let Some(ev) = stream.next().await {
        let p = match ev {
            Ok(watcher::Event::Init) => {
                listed = false;
                continue;
            }
            Ok(watcher::Event::InitApply(o)) => {
                listed = true;
                Presence::of(o.metadata())
            }
            Ok(watcher::Event::InitDone) if listed => continue,
            Ok(watcher::Event::InitDone) => Presence::Gone,
            Ok(watcher::Event::Apply(o)) => Presence::of(o.metadata()),
            Ok(watcher::Event::Delete(_)) => Presence::Gone,
            Err(e) => {
                tracing::debug!("removal watch: {e}");
                tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(5))).await;
                continue;
            }
        };
        backoff.reset();
        set(&mut seen.lock().unwrap(), p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner {
            namespace: "enforcer-system".into(),
            pod: "enforcer-abcde".into(),
            daemonset: "enforcer".into(),
        }
    }

    fn seen(namespace: Presence, daemonset: Presence) -> Seen {
        Seen {
            namespace,
            daemonset,
        }
    }

    #[test]
    fn a_restart_keeps_the_programs() {
        use Presence::*;
        let d = decide(&owner(), &seen(Present, Present), &seen(Present, Present));
        assert!(
            matches!(d, Decision::Keep(ref why) if why.contains("in place")),
            "{d:?}"
        );
    }

    #[test]
    fn a_deleted_daemonset_or_namespace_uninstalls_whichever_source_saw_it() {
        use Presence::*;
        for (watched, fresh, says) in [
            (
                seen(Present, Gone),
                seen(Unknown, Unknown),
                "deleted (seen by the watch)",
            ),
            (
                seen(Present, Deleting),
                seen(Present, Present),
                "being deleted",
            ),
            (
                seen(Present, Present),
                seen(Present, Gone),
                "deleted (read at SIGTERM)",
            ),
            (
                seen(Deleting, Present),
                seen(Unknown, Unknown),
                "namespace enforcer-system",
            ),
            (
                seen(Unknown, Unknown),
                seen(Gone, Unknown),
                "namespace enforcer-system",
            ),
        ] {
            match decide(&owner(), &watched, &fresh) {
                Decision::Uninstall(why) => assert!(why.contains(says), "{why}"),
                d => panic!("{watched:?} {fresh:?}: {d:?}"),
            }
        }
    }

    #[test]
    fn no_answer_fails_closed() {
        use Presence::*;
        for (watched, fresh) in [
            (seen(Unknown, Unknown), seen(Unknown, Unknown)),
            (seen(Present, Present), seen(Unknown, Unknown)),
            (seen(Present, Present), seen(Present, Unknown)),
        ] {
            match decide(&owner(), &watched, &fresh) {
                Decision::Keep(why) => assert!(why.contains("failing closed"), "{why}"),
                d => panic!("{watched:?} {fresh:?}: {d:?}"),
            }
        }
    }
}
