//! The live verdict stream of this node (`enforcer observe`): every event the kernel
//! reports (denials and audits; allowed new flows too with `--allow-events`; runtime guard
//! hits), as JSON lines on a Unix socket.
//!
//! A Unix socket rather than the health port: events name pods, addresses and policies,
//! and the health port listens on the node's network in the DaemonSet. The socket is
//! created 0600 (in a 0700 directory when the agent creates it): root on the node, or `kubectl exec` into the agent's
//! container, can read it; nothing else can. Rendering happens per subscriber with the
//! names known at that moment; a subscriber that falls behind by more than the channel
//! holds gets a `{"type":"lagged","missed":N}` line instead of the events it missed, and
//! never slows the agent down.

use std::{
    io,
    os::unix::fs::PermissionsExt,
    path::Path,
    sync::{Arc, RwLock},
};

use tokio::{
    io::AsyncWriteExt,
    net::UnixListener,
    sync::broadcast::{self, error::RecvError},
};

use super::events::{Event, Names};

/// Where the agent serves the stream unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/enforcer/observe.sock";

/// Binds `path` (a stale socket from an earlier run is replaced), owner-only.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    // A directory made here is owner-only; an existing one is left as it is (it may be
    // shared, like /tmp).
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves every client until the agent exits.
pub async fn serve(
    listener: UnixListener,
    tx: broadcast::Sender<(Event, String)>,
    names: Arc<RwLock<Names>>,
) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let mut rx = tx.subscribe();
        let names = names.clone();
        tokio::spawn(async move {
            loop {
                let json = match rx.recv().await {
                    Ok((ev, line)) => {
                        let n = names.read().unwrap_or_else(|e| e.into_inner());
                        ev.to_json(&n, &line)
                    }
                    Err(RecvError::Lagged(missed)) => {
                        serde_json::json!({"type": "lagged", "missed": missed})
                    }
                    Err(RecvError::Closed) => break,
                };
                let mut text = json.to_string();
                text.push('\n');
                if stream.write_all(text.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// What `enforcer observe` shows.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Events of pods in this namespace.
    pub namespace: Option<String>,
    /// Events of this pod (`NS/NAME`).
    pub pod: Option<String>,
    /// allow, deny or audit.
    pub verdict: Option<String>,
    /// ingress or egress (network events only).
    pub direction: Option<String>,
    /// network or guard.
    pub kind: Option<String>,
}

impl Filter {
    pub fn admits(&self, ev: &serde_json::Value) -> bool {
        let field = |k: &str| ev.get(k).and_then(|v| v.as_str()).unwrap_or("");
        if field("type") == "lagged" {
            return true;
        }
        let pod = field("pod");
        self.namespace
            .as_ref()
            .is_none_or(|ns| pod.split_once('/').is_some_and(|(n, _)| n == ns))
            && self.pod.as_ref().is_none_or(|p| pod == p)
            && self.verdict.as_ref().is_none_or(|v| field("verdict") == v)
            && self
                .direction
                .as_ref()
                .is_none_or(|d| field("direction") == d)
            && self.kind.as_ref().is_none_or(|k| field("type") == k)
    }
}

/// `enforcer observe`: follows the stream at `socket`, printing the events `filter`
/// admits (JSON lines, or their readable line with the time).
pub fn follow(socket: &Path, filter: &Filter, json: bool) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::{BufRead, Write};
    let stream = std::os::unix::net::UnixStream::connect(socket).with_context(|| {
        format!(
            "connecting to the agent's event stream at {} (is the agent running here, with \
             --observe-socket at that path? in Kubernetes: kubectl -n enforcer-system exec \
             ds/enforcer -- enforcer observe)",
            socket.display()
        )
    })?;
    let out = io::stdout();
    for line in io::BufReader::new(stream).lines() {
        let line = line.context("reading the event stream")?;
        let Ok(ev) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if !filter.admits(&ev) {
            continue;
        }
        let mut out = out.lock();
        let written = if json {
            writeln!(out, "{line}")
        } else if ev["type"] == "lagged" {
            writeln!(
                out,
                "... {} events missed (the reader fell behind)",
                ev["missed"]
            )
        } else {
            let t = ev["time"].as_f64().unwrap_or(0.0);
            let secs = t as u64;
            writeln!(
                out,
                "{:02}:{:02}:{:02}.{:03} {}",
                (secs / 3600) % 24,
                (secs / 60) % 60,
                secs % 60,
                ((t - secs as f64) * 1000.0) as u64,
                ev["line"].as_str().unwrap_or("")
            )
        };
        // A closed pipe (`| head`) ends the command quietly.
        if written.and_then(|_| out.flush()).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_select_by_pod_namespace_verdict_direction_and_type() {
        let ev = serde_json::json!({"type": "network", "pod": "x/a", "verdict": "deny",
                                    "direction": "egress"});
        let f = |g: Filter| g.admits(&ev);
        assert!(f(Filter::default()));
        assert!(f(Filter {
            namespace: Some("x".into()),
            ..Default::default()
        }));
        assert!(!f(Filter {
            namespace: Some("y".into()),
            ..Default::default()
        }));
        assert!(f(Filter {
            pod: Some("x/a".into()),
            ..Default::default()
        }));
        assert!(!f(Filter {
            pod: Some("x/b".into()),
            ..Default::default()
        }));
        assert!(!f(Filter {
            verdict: Some("allow".into()),
            ..Default::default()
        }));
        assert!(!f(Filter {
            direction: Some("ingress".into()),
            ..Default::default()
        }));
        assert!(!f(Filter {
            kind: Some("guard".into()),
            ..Default::default()
        }));
        let lagged = serde_json::json!({"type": "lagged", "missed": 3});
        assert!(
            Filter {
                pod: Some("x/b".into()),
                ..Default::default()
            }
            .admits(&lagged)
        );
    }
}
