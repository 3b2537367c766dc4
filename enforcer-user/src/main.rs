//! The `enforcer` command.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use enforcer::agent::{self, GuardsMode, SourceKind, Unclassified};

/// enforcer: Kubernetes NetworkPolicy and runtime guards, enforced in the kernel with eBPF.
#[derive(Parser)]
#[command(name = "enforcer", version, about)]
struct Cli {
    /// Log format on stderr: text, or JSON objects (one per line) for log collectors.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum UnclassifiedArg {
    /// Traffic of pod cgroups not yet classified is dropped until their policy is
    /// programmed, and (with runtime guards on) they get the strictest guard set
    /// (restricted) from their first exec until they are classified.
    Deny,
    /// Such traffic passes and such pods are not guarded (a window of no enforcement while
    /// pods start).
    Allow,
}

#[derive(Clone, Copy, ValueEnum)]
enum GuardsArg {
    /// The BPF LSM tier where the kernel has it active, else the fallback tier.
    Auto,
    /// Only the BPF LSM tier: refuse to start without it.
    Lsm,
    /// The fallback tier (cgroup programs, SIGKILL at syscall entry).
    Fallback,
    /// No runtime guards.
    Off,
}

// Parsed once at start-up: the size of the `run` variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Enforce NetworkPolicy and runtime guards for this node's pods: from a directory of
    /// manifests (standalone mode), or from the Kubernetes API when --manifests is absent.
    Run {
        /// Directory of *.yaml, *.yml, *.json manifests (Namespace, Pod, NetworkPolicy,
        /// RuntimePolicy); changes are enforced within a second.
        #[arg(long)]
        manifests: Option<PathBuf>,
        /// Kubernetes mode: kubeconfig file (default: the in-cluster service account).
        #[arg(long, conflicts_with = "manifests")]
        kubeconfig: Option<PathBuf>,
        /// Kubernetes mode: the agent's own pod name (downward API: metadata.name). With
        /// --pod-namespace, deleting the DaemonSet that owns the pod, or its namespace,
        /// uninstalls this node's programs when the agent stops; otherwise they keep
        /// enforcing for the next agent.
        #[arg(long, env = "POD_NAME")]
        pod_name: Option<String>,
        /// Kubernetes mode: the agent's own namespace (downward API: metadata.namespace).
        #[arg(long, env = "POD_NAMESPACE")]
        pod_namespace: Option<String>,
        /// This node's name: pods with spec.nodeName equal to it are enforced here.
        #[arg(long, env = "NODE_NAME")]
        node: String,
        /// cgroup2 directory below which the kubelet's pod cgroups are found and the
        /// programs attach (default: the cgroup2 mount).
        #[arg(long)]
        cgroup_root: Option<PathBuf>,
        /// Where the kubelet's pod cgroups are, relative to --cgroup-root, when the kubelet
        /// runs with its own --cgroup-root (e.g. kind: kubelet.slice/kubelet-kubepods.slice).
        /// Default: kubepods.slice or kubepods directly below --cgroup-root.
        #[arg(long)]
        kubepods: Option<PathBuf>,
        /// Serve /readyz, /healthz and /metrics here.
        #[arg(long)]
        health_addr: Option<SocketAddr>,
        /// This instance's bpffs directory (pinned maps and programs).
        #[arg(long, default_value = "/sys/fs/bpf/enforcer")]
        bpffs: PathBuf,
        /// Pod cgroups the agent has not classified yet.
        #[arg(long, value_enum, default_value = "deny")]
        unclassified: UnclassifiedArg,
        /// Additional addresses of this node (its interfaces' addresses are always used).
        #[arg(long = "node-ip")]
        node_ips: Vec<IpAddr>,
        /// Report NetworkPolicy denials without dropping traffic.
        #[arg(long)]
        network_audit: bool,
        /// Also report allowed new flows (logged at info level, rate limited with denials).
        #[arg(long)]
        allow_events: bool,
        /// Denial log lines per second before rate limiting.
        #[arg(long, default_value_t = 20.0)]
        log_rate: f64,
        /// Serve the live event stream (`enforcer observe`) on this Unix socket (owner
        /// only); an empty value turns it off.
        #[arg(long, default_value = enforcer::agent::observe::DEFAULT_SOCKET)]
        observe_socket: PathBuf,
        /// Retired: Services are translated at the socket (no deferral any more). Accepted
        /// so that existing manifests keep starting; a warning says it is ignored.
        #[arg(long = "service-cidr", hide = true)]
        service_cidrs: Vec<ipnet::IpNet>,
        /// Runtime guard tier.
        #[arg(long, value_enum, default_value = "auto")]
        runtime_guards: GuardsArg,
        /// Tests only: make the fallback tier stop enforcing this guard after attaching it,
        /// as a broken kernel would (the start-up self-test must catch it).
        #[arg(long, hide = true)]
        break_fallback_guard: Vec<String>,
    },
    /// Why a flow is allowed or denied: egress at the source pod, ingress at the
    /// destination pod, by which NetworkPolicy rule, or by default deny. Offline, from a
    /// directory of manifests; a Service address is explained for each ready backend.
    Explain {
        /// Directory of manifests (as for `run --manifests`).
        #[arg(long)]
        manifests: PathBuf,
        /// The source: NAMESPACE/POD or an IP address.
        #[arg(long)]
        from: String,
        /// The destination: NAMESPACE/POD or an IP address ([IPv6]), with :PORT, and
        /// /TCP (default), /UDP or /SCTP.
        #[arg(long)]
        to: String,
        /// The destination pod's node addresses (ingress from them always passes).
        #[arg(long = "node-ip")]
        node_ips: Vec<IpAddr>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Follow this node's verdicts live: denials and audits (allowed new flows too when the
    /// agent runs with --allow-events) and runtime guard hits, named by pod and policy.
    Observe {
        /// The agent's event socket (its --observe-socket).
        #[arg(long, default_value = enforcer::agent::observe::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Only events of pods in this namespace.
        #[arg(long)]
        namespace: Option<String>,
        /// Only events of this pod (NAMESPACE/NAME).
        #[arg(long)]
        pod: Option<String>,
        /// Only this verdict.
        #[arg(long, value_parser = ["allow", "deny", "audit"])]
        verdict: Option<String>,
        /// Only this direction (network events).
        #[arg(long, value_parser = ["ingress", "egress"])]
        direction: Option<String>,
        /// Only network events or only runtime guard events.
        #[arg(long = "type", value_parser = ["network", "guard"])]
        kind: Option<String>,
        /// JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show what this node's kernel supports and what an instance has attached.
    Status {
        /// The instance's bpffs directory.
        #[arg(long, default_value = "/sys/fs/bpf/enforcer")]
        bpffs: PathBuf,
    },
    /// One operation of the agent's start-up self-test, in the throwaway cgroup the agent
    /// placed this process in (internal).
    #[command(name = "self-test-op", hide = true)]
    SelfTestOp { op: String, arg: Option<String> },
    /// Detach everything an instance attached and remove its pins.
    Uninstall {
        /// The instance's bpffs directory.
        #[arg(long, default_value = "/sys/fs/bpf/enforcer")]
        bpffs: PathBuf,
    },
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => fmt.json().with_current_span(false).init(),
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Command::SelfTestOp { op, arg } = &cli.command {
        std::process::exit(enforcer::guards::selftest::run_op(op, arg.as_deref()));
    }
    init_logging(cli.log_format);
    match cli.command {
        Command::Run {
            manifests,
            kubeconfig,
            pod_name,
            pod_namespace,
            node,
            cgroup_root,
            kubepods,
            health_addr,
            bpffs,
            unclassified,
            node_ips,
            network_audit,
            allow_events,
            log_rate,
            observe_socket,
            service_cidrs,
            runtime_guards,
            break_fallback_guard,
        } => {
            if !service_cidrs.is_empty() {
                tracing::warn!(
                    "--service-cidr is retired and ignored: Service addresses are translated \
                     to their backends at the socket and judged as the backend pods"
                );
            }
            let opts = agent::Options {
                source: match manifests {
                    Some(dir) => SourceKind::Manifests(dir),
                    None => SourceKind::Kubernetes {
                        kubeconfig,
                        own_pod: pod_namespace.zip(pod_name),
                    },
                },
                node,
                cgroup_root,
                kubepods,
                health_addr,
                bpffs,
                unclassified: match unclassified {
                    UnclassifiedArg::Deny => Unclassified::Deny,
                    UnclassifiedArg::Allow => Unclassified::Allow,
                },
                node_ips,
                network_audit,
                allow_events,
                log_rate,
                observe_socket: (!observe_socket.as_os_str().is_empty()).then_some(observe_socket),
                break_fallback_guards: break_fallback_guard
                    .iter()
                    .map(|n| {
                        enforcer::guards::GUARD_NAMES
                            .iter()
                            .find(|(_, name)| name == n)
                            .map(|(b, _)| *b)
                            .ok_or_else(|| {
                                anyhow::anyhow!("--break-fallback-guard: unknown guard {n:?}")
                            })
                    })
                    .collect::<Result<Vec<u32>>>()?
                    .into_iter()
                    .fold(0, |a, b| a | b),
                guards: match runtime_guards {
                    GuardsArg::Auto => GuardsMode::Auto,
                    GuardsArg::Lsm => GuardsMode::Lsm,
                    GuardsArg::Fallback => GuardsMode::Fallback,
                    GuardsArg::Off => GuardsMode::Off,
                },
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(agent::run(opts))
        }
        Command::Explain {
            manifests,
            from,
            to,
            node_ips,
            json,
        } => explain(&manifests, &from, &to, &node_ips, json),
        Command::Observe {
            socket,
            namespace,
            pod,
            verdict,
            direction,
            kind,
            json,
        } => enforcer::agent::observe::follow(
            &socket,
            &enforcer::agent::observe::Filter {
                namespace,
                pod,
                verdict,
                direction,
                kind,
            },
            json,
        ),
        Command::Status { bpffs } => {
            print!("{}", enforcer::status::report(&bpffs));
            Ok(())
        }
        Command::SelfTestOp { .. } => unreachable!("handled before logging starts"),
        Command::Uninstall { bpffs } => {
            let n = enforcer::bpf::uninstall(&bpffs)?;
            println!("removed {n} pinned objects from {}", bpffs.display());
            Ok(())
        }
    }
}

/// `enforcer explain`.
fn explain(dir: &Path, from: &str, to: &str, node_ips: &[IpAddr], json: bool) -> Result<()> {
    use enforcer::{model::Protocol, policy::explain as ex};
    let (from_t, from_port, _) =
        ex::parse_target(from).map_err(|e| anyhow::anyhow!("--from {e}"))?;
    if from_port.is_some() {
        anyhow::bail!("--from {from:?}: the port goes with --to (the destination port)");
    }
    let (to_t, port, protocol) = ex::parse_target(to).map_err(|e| anyhow::anyhow!("--to {e}"))?;
    let port =
        port.ok_or_else(|| anyhow::anyhow!("--to {to:?}: add the destination port, e.g. {to}:80"))?;
    let mut store = enforcer::manifests::Store::new();
    let report = store.reload(dir);
    for e in &report.errors {
        eprintln!("warning: {e}");
    }
    let cluster = store.cluster();
    let from_end = ex::resolve(cluster, &from_t)
        .map_err(|e| anyhow::anyhow!("--from: {e} ({})", dir.display()))?;
    let to_end = ex::resolve(cluster, &to_t)
        .map_err(|e| anyhow::anyhow!("--to: {e} ({})", dir.display()))?;
    let all = ex::explain(
        cluster,
        node_ips,
        from_end,
        to_end,
        protocol.unwrap_or(Protocol::Tcp),
        port,
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    if all.is_empty() {
        let msg =
            format!("{to}: a Service frontend without a ready backend: the connection is refused");
        if json {
            println!(
                "{}",
                serde_json::json!({"to": to, "allowed": false, "reason": "no-ready-backend", "message": msg})
            );
        } else {
            println!("{msg}");
        }
        return Ok(());
    }
    for e in &all {
        if json {
            println!("{}", ex::to_json(e));
        } else {
            print!("{}", ex::render(e));
        }
    }
    Ok(())
}
