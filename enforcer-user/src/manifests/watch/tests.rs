//! Tests of the directory watcher: every kind of change is noticed within the product's
//! one-second promise, bursts are coalesced, replaced directories are followed.

use std::os::unix::fs::symlink;

use tokio::{
    sync::mpsc::Receiver,
    task::JoinHandle,
    time::{Instant, timeout},
};

use super::*;
use crate::manifests::Store;

/// File change to enforcement is promised within 1 s; the watcher's share must fit in it.
const PROMISE: Duration = Duration::from_secs(1);
/// Longer than any burst: [`MAX_DELAY`] plus margin.
const SETTLE: Duration = Duration::from_millis(400);

fn namespace_yaml(name: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
}

/// A watcher on `dir`, its initial notification consumed.
async fn start(dir: &Path) -> (Receiver<()>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel(4);
    let task = tokio::spawn(watch(dir.to_path_buf(), tx));
    timeout(PROMISE, rx.recv())
        .await
        .expect("no initial notification")
        .expect("watcher stopped");
    (rx, task)
}

/// Waits for a notification (failing after [`PROMISE`]), then lets the burst end and
/// drops the notifications it caused.
async fn notified(rx: &mut Receiver<()>, what: &str) -> Duration {
    let start = Instant::now();
    timeout(PROMISE, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no notification within {PROMISE:?} after {what}"))
        .expect("watcher stopped");
    let elapsed = start.elapsed();
    settle(rx).await;
    elapsed
}

/// Waits until no event is pending and drops the notifications received meanwhile.
async fn settle(rx: &mut Receiver<()>) {
    sleep(SETTLE).await;
    while rx.try_recv().is_ok() {}
}

/// Asserts that no notification comes for a while.
async fn quiet(rx: &mut Receiver<()>, what: &str) {
    if timeout(SETTLE, rx.recv()).await.is_ok() {
        panic!("unexpected notification after {what}");
    }
}

#[tokio::test]
async fn notices_writes_renames_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut rx, _task) = start(dir.path()).await;
    let mut store = Store::new();
    store.reload(dir.path());

    fs::write(dir.path().join("a.yaml"), namespace_yaml("a")).unwrap();
    let took = notified(&mut rx, "a write").await;
    assert!(took < Duration::from_millis(500), "{took:?}");
    // By the time the notification arrives, the write is complete.
    assert!(store.reload(dir.path()).changed);
    assert!(store.cluster().namespaces.contains_key("a"));

    // Written elsewhere first (that is noticed too, and settled), then renamed into place.
    let tmp = dir.path().join(".b.yaml.tmp");
    fs::write(&tmp, namespace_yaml("b")).unwrap();
    settle(&mut rx).await;
    fs::rename(&tmp, dir.path().join("b.yaml")).unwrap();
    notified(&mut rx, "a rename into place").await;
    assert!(store.reload(dir.path()).changed);
    assert!(store.cluster().namespaces.contains_key("b"));

    fs::remove_file(dir.path().join("a.yaml")).unwrap();
    notified(&mut rx, "a delete").await;
    assert!(store.reload(dir.path()).changed);
    assert!(!store.cluster().namespaces.contains_key("a"));

    // In-place modification.
    fs::write(dir.path().join("b.yaml"), namespace_yaml("c")).unwrap();
    notified(&mut rx, "an in-place write").await;
    assert!(store.reload(dir.path()).changed);
    assert!(store.cluster().namespaces.contains_key("c"));

    quiet(&mut rx, "nothing").await;
}

#[tokio::test]
async fn coalesces_bursts() {
    let dir = tempfile::tempdir().unwrap();
    let (mut rx, _task) = start(dir.path()).await;
    for i in 0..50 {
        fs::write(dir.path().join(format!("{i}.yaml")), namespace_yaml("x")).unwrap();
    }
    timeout(PROMISE, rx.recv())
        .await
        .expect("no notification after a burst")
        .unwrap();
    sleep(SETTLE).await;
    let mut more = 0;
    while rx.try_recv().is_ok() {
        more += 1;
    }
    assert!(more <= 1, "{} notifications for one burst", more + 1);
}

#[tokio::test]
async fn follows_a_swapped_directory_link() {
    let base = tempfile::tempdir().unwrap();
    let (v1, v2) = (base.path().join("v1"), base.path().join("v2"));
    fs::create_dir(&v1).unwrap();
    fs::create_dir(&v2).unwrap();
    fs::write(v1.join("a.yaml"), namespace_yaml("a")).unwrap();
    fs::write(v2.join("b.yaml"), namespace_yaml("b")).unwrap();
    let current = base.path().join("current");
    symlink("v1", &current).unwrap();
    let (mut rx, _task) = start(&current).await;
    let mut store = Store::new();
    store.reload(&current);

    // Atomic replacement of the link, as deployment tools do.
    let next = base.path().join(".current.next");
    symlink("v2", &next).unwrap();
    fs::rename(&next, &current).unwrap();
    notified(&mut rx, "the link swap").await;
    assert!(store.reload(&current).changed);
    assert!(store.cluster().namespaces.contains_key("b"));

    // The watch moved to the new directory...
    fs::write(v2.join("c.yaml"), namespace_yaml("c")).unwrap();
    notified(&mut rx, "a write in the new directory").await;
    // ... and left the old one.
    fs::write(v1.join("d.yaml"), namespace_yaml("d")).unwrap();
    quiet(&mut rx, "a write in the old directory").await;
}

#[tokio::test]
async fn follows_a_recreated_directory() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("manifests");
    fs::create_dir(&dir).unwrap();
    let (mut rx, _task) = start(&dir).await;

    fs::remove_dir_all(&dir).unwrap();
    notified(&mut rx, "the directory's removal").await;
    fs::create_dir(&dir).unwrap();
    notified(&mut rx, "the directory's creation").await;
    fs::write(dir.join("a.yaml"), namespace_yaml("a")).unwrap();
    notified(&mut rx, "a write in the new directory").await;
}

#[tokio::test]
async fn waits_for_a_missing_directory() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("later");
    let (mut rx, _task) = start(&dir).await;
    fs::create_dir(&dir).unwrap();
    notified(&mut rx, "the directory's creation").await;
    fs::write(dir.join("a.yaml"), namespace_yaml("a")).unwrap();
    notified(&mut rx, "a write in the directory").await;
}

#[tokio::test]
async fn notices_configmap_style_updates() {
    // A ConfigMap volume: visible links to `..data/<file>`, `..data` a link to a timestamped
    // directory, replaced atomically on update.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir(d.join("..v1")).unwrap();
    fs::write(d.join("..v1/ns.yaml"), namespace_yaml("a")).unwrap();
    symlink("..v1", d.join("..data")).unwrap();
    symlink("..data/ns.yaml", d.join("ns.yaml")).unwrap();
    let (mut rx, _task) = start(d).await;
    let mut store = Store::new();
    store.reload(d);
    assert!(store.cluster().namespaces.contains_key("a"));

    fs::create_dir(d.join("..v2")).unwrap();
    fs::write(d.join("..v2/ns.yaml"), namespace_yaml("b")).unwrap();
    symlink("..v2", d.join("..data_tmp")).unwrap();
    settle(&mut rx).await;
    fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    notified(&mut rx, "the ..data swap").await;
    assert!(store.reload(d).changed);
    assert!(store.cluster().namespaces.contains_key("b"));
    assert!(!store.cluster().namespaces.contains_key("a"));
}

#[tokio::test]
async fn stops_when_the_receiver_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (rx, task) = start(dir.path()).await;
    drop(rx);
    timeout(PROMISE, task)
        .await
        .expect("the watcher did not stop")
        .unwrap();
}

#[tokio::test]
async fn polling_fallback_notices_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = mpsc::channel(4);
    let path = dir.path().to_path_buf();
    tokio::spawn(async move { poll(&path, &tx).await });
    timeout(PROMISE, rx.recv()).await.unwrap().unwrap();
    fs::write(dir.path().join("a.yaml"), namespace_yaml("a")).unwrap();
    notified(&mut rx, "a write (polling)").await;
    fs::remove_file(dir.path().join("a.yaml")).unwrap();
    notified(&mut rx, "a delete (polling)").await;
    quiet(&mut rx, "nothing (polling)").await;
}

#[test]
fn the_watch_future_can_be_spawned() {
    fn assert_send<T: Send + 'static>(_: &T) {}
    let (tx, _rx) = mpsc::channel(1);
    assert_send(&watch(PathBuf::from("/nonexistent"), tx));
}
