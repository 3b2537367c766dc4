//! The node: its network namespace, the host processes (containerd, kubelet, kube-proxy),
//! bring-up, tear-down and status.
//!
//! Processes are started by pid file and stopped by that pid only after checking that it
//! still runs the binary we started; containers are stopped through containerd, and their
//! shims and processes by the pids containerd recorded. Nothing else on the machine is
//! touched.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{
    Layout, NETNS, NODE_IP, NODE_NAME, NODE_PREFIX_LEN, ProxyMode, build::Bins, images::Archive,
    pki, specs, write,
};
use crate::util::{display, output, root, run};

pub fn ensure_packages() -> Result<()> {
    if std::env::var_os("ENFORCER_NO_SETUP").is_none() {
        crate::setup::setup(false)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Host processes

fn pid_file(l: &Layout, name: &str) -> PathBuf {
    l.run.join(format!("{name}.pid"))
}

/// The executable's file name of a live process (without the " (deleted)" suffix of a
/// replaced binary).
fn exe_name(pid: u32) -> Option<String> {
    let link = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let s = link.to_string_lossy();
    let s = s.strip_suffix(" (deleted)").unwrap_or(&s);
    Path::new(s)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
}

/// The pid of our `name` daemon if it is alive and still runs `exe`.
fn running(l: &Layout, name: &str, exe: &str) -> Option<u32> {
    let pid: u32 = fs::read_to_string(pid_file(l, name))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (exe_name(pid)? == exe).then_some(pid)
}

/// Start `argv` in the node's network namespace, detached (own process group), output
/// appended to its log.
fn start(l: &Layout, name: &str, argv: &[String]) -> Result<u32> {
    use std::os::unix::process::CommandExt;
    fs::create_dir_all(l.logs())?;
    fs::create_dir_all(&l.run)?;
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(l.logs().join(format!("{name}.log")))?;
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{NETNS}"))
        .arg("--")
        .args(argv)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    eprintln!("+ {}", display(&cmd));
    let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    let pid = child.id();
    // Not waited for: it outlives this command. Its parent is reaped by init.
    std::mem::forget(child);
    fs::write(pid_file(l, name), pid.to_string())?;
    Ok(pid)
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

fn alive(pid: u32) -> bool {
    // A zombie still has /proc/<pid>; its state is 'Z'.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

/// Stop a process we started: SIGTERM, then SIGKILL after `grace`.
fn stop_pid(pid: u32, grace: Duration) {
    signal(pid, "TERM");
    let deadline = Instant::now() + grace;
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if alive(pid) {
        signal(pid, "KILL");
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn stop(l: &Layout, name: &str, exe: &str) {
    if let Some(pid) = running(l, name, exe) {
        eprintln!("cluster: stopping {name} (pid {pid})");
        stop_pid(pid, Duration::from_secs(10));
    }
    let _ = fs::remove_file(pid_file(l, name));
}

/// Poll `f` until it holds or `timeout` passes; on timeout, fail with the tails of `logs`.
pub fn wait_for(
    l: &Layout,
    what: &str,
    timeout: Duration,
    logs: &[&str],
    mut f: impl FnMut() -> bool,
) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            eprintln!("cluster: {what} ({:.1}s)", start.elapsed().as_secs_f64());
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut msg = format!("cluster: timed out after {timeout:?} waiting for {what}");
    for log in logs {
        msg.push_str(&format!(
            "\n---- last lines of {log} ----\n{}",
            tail(l, log, 40)
        ));
    }
    bail!(msg)
}

/// The last `n` lines of a log under the logs directory, or of a pod's logs under the
/// kubelet's pod log directory when `name` is `pod:<name-prefix>`.
pub fn tail(l: &Layout, name: &str, n: usize) -> String {
    let path = if let Some(pod) = name.strip_prefix("pod:") {
        let dir = l.state.join("pod-logs");
        let found = fs::read_dir(&dir).ok().and_then(|d| {
            d.filter_map(|e| e.ok())
                .find(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .split('_')
                        .nth(1)
                        .is_some_and(|p| p.starts_with(pod))
                })
                .map(|e| e.path())
        });
        let Some(pod_dir) = found else {
            return format!("(no logs of a pod named {pod}* yet)");
        };
        // <pod dir>/<container>/<restart>.log: the newest file.
        let mut logs: Vec<PathBuf> = walk_files(&pod_dir);
        logs.sort_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok());
        match logs.pop() {
            Some(p) => p,
            None => return "(empty)".into(),
        }
    } else {
        l.logs().join(format!("{name}.log"))
    };
    let s = fs::read_to_string(&path).unwrap_or_else(|e| format!("({}: {e})", path.display()));
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk_files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Host preparation and the node's network namespace

fn mounts() -> Vec<(String, String)> {
    // (mount point, fs type) from /proc/self/mountinfo.
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            Some((unescape(f.get(4)?), f.get(sep + 1)?.to_string()))
        })
        .collect()
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\134", "\\")
}

fn prepare_host() -> Result<()> {
    // bpffs where the DaemonSet expects the host's (systemd mounts it on real nodes).
    if !mounts()
        .iter()
        .any(|(m, t)| m == "/sys/fs/bpf" && t == "bpf")
    {
        fs::create_dir_all("/sys/fs/bpf")?;
        run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))?;
    }
    // Mount propagation as on any systemd host: the kubelet and containerd need shared
    // mounts (HostToContainer volumes such as the DaemonSet's bpffs, projected tokens).
    run(Command::new("mount").args(["--make-rshared", "/"]))?;
    Ok(())
}

fn netns_exists() -> bool {
    Path::new("/run/netns").join(NETNS).exists()
}

fn in_netns(args: &[&str]) -> Result<String> {
    output(Command::new("ip").args(["netns", "exec", NETNS]).args(args))
}

fn prepare_netns() -> Result<()> {
    if !netns_exists() {
        run(Command::new("ip").args(["netns", "add", NETNS]))?;
    }
    if in_netns(&["ip", "link", "show", "dev", "eth0"]).is_err() {
        // The node's "uplink": a veth pair with both ends inside the namespace (this
        // kernel has no dummy driver). Nothing leaves the namespace through it.
        in_netns(&[
            "ip", "link", "add", "name", "eth0", "type", "veth", "peer", "name", "uplink0",
        ])?;
        in_netns(&[
            "ip",
            "addr",
            "add",
            &format!("{NODE_IP}/{NODE_PREFIX_LEN}"),
            "dev",
            "eth0",
        ])?;
    }
    in_netns(&["ip", "link", "set", "lo", "up"])?;
    in_netns(&["ip", "link", "set", "uplink0", "up"])?;
    in_netns(&["ip", "link", "set", "eth0", "up"])?;
    // Components that look for "the" node address follow the default route.
    in_netns(&["ip", "route", "replace", "default", "dev", "eth0"])?;
    in_netns(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])?;
    in_netns(&["sysctl", "-q", "-w", "net.ipv4.conf.all.route_localnet=1"])?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// containerd and images

fn ctr(l: &Layout) -> Command {
    let mut c = Command::new("ctr");
    c.arg("--address")
        .arg(l.containerd_sock())
        .args(["--namespace", "k8s.io"]);
    c
}

fn containerd_ready(l: &Layout) -> bool {
    ctr(l)
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn imported_stamp(l: &Layout) -> PathBuf {
    l.containerd_root().join("enforcer-imported")
}

/// Import what containerd does not have yet (by image id), remembering what was imported.
fn import_images(l: &Layout, archives: &[Archive]) -> Result<()> {
    let stamp_path = imported_stamp(l);
    let mut stamp: BTreeMap<String, String> = fs::read_to_string(&stamp_path)
        .unwrap_or_default()
        .lines()
        .filter_map(|x| x.split_once(' '))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let present = output(ctr(l).args(["images", "ls", "-q"]))?;
    for a in archives {
        let have = present.lines().any(|n| n == a.name);
        if have && stamp.get(&a.name) == Some(&a.id) {
            continue;
        }
        run(ctr(l).args(["images", "import"]).arg(&a.path))?;
        stamp.insert(a.name.clone(), a.id.clone());
        let text: String = stamp.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
        fs::write(&stamp_path, text)?;
    }
    Ok(())
}

/// The enforcer image (`cargo xtask image`), as an archive to import.
fn enforcer_archive() -> Result<Archive> {
    crate::image::image(&[])?;
    let path = root().join("target/image/enforcer.docker.tar");
    let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    use sha2::Digest;
    Ok(Archive {
        name: crate::image::default_tag(),
        id: super::build::hex(&sha2::Sha256::digest(&bytes)),
        path,
    })
}

// ---------------------------------------------------------------------------------------
// kubectl

pub fn kubectl(l: &Layout) -> Command {
    Command::new(l.kubectl())
}

fn kubectl_ok(l: &Layout, args: &[&str]) -> bool {
    kubectl(l)
        .args(args)
        .args(["--request-timeout=5s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn kubectl_out(l: &Layout, args: &[&str]) -> Option<String> {
    let o = kubectl(l)
        .args(args)
        .args(["--request-timeout=5s"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

// ---------------------------------------------------------------------------------------
// up

/// Write `contents` only when it differs: the kubelet restarts a static pod whose file
/// changed, and a second `up` must not.
fn write_if_changed(path: &Path, contents: &str) -> Result<bool> {
    if fs::read_to_string(path).ok().as_deref() == Some(contents) {
        return Ok(false);
    }
    write(path, contents)?;
    Ok(true)
}

pub fn up(l: &Layout, bins: &Bins, archives: &[Archive], mode: ProxyMode) -> Result<()> {
    prepare_host()?;
    prepare_netns()?;
    for d in [&l.state, &l.run, &l.manifests(), &l.logs()] {
        fs::create_dir_all(d)?;
    }
    pki::ensure(l)?;
    // The binaries of this build, under a stable path for configs and the kubectl wrapper.
    let link = l.bin();
    fs::create_dir_all(link.parent().unwrap())?;
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(&bins.dir, &link)
        .with_context(|| format!("linking {}", link.display()))?;
    write_if_changed(
        &l.state.join("containerd.toml"),
        &specs::containerd_config(l),
    )?;
    write_if_changed(
        &l.state.join("cni/net.d/10-ptp.conflist"),
        &specs::cni_conflist(l),
    )?;
    write_if_changed(&l.state.join("kubelet.yaml"), &specs::kubelet_config(l))?;
    // The node's upstream resolver for pods with dnsPolicy Default (CoreDNS): there is none.
    write_if_changed(
        &l.state.join("resolv.conf"),
        "# the test node has no upstream resolver\nnameserver 127.0.0.1\n",
    )?;
    let wrapper = specs::kubectl_wrapper(l, bins);
    write_if_changed(&l.kubectl(), &wrapper)?;
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(l.kubectl(), fs::Permissions::from_mode(0o755))?;
    }

    // containerd.
    if running(l, "containerd", "containerd").is_none() {
        start(
            l,
            "containerd",
            &[
                "/usr/bin/containerd".into(),
                "--config".into(),
                l.state.join("containerd.toml").display().to_string(),
            ],
        )?;
    }
    wait_for(
        l,
        "containerd answers",
        Duration::from_secs(30),
        &["containerd"],
        || containerd_ready(l),
    )?;
    let mut all = archives.to_vec();
    all.push(enforcer_archive()?);
    import_images(l, &all)?;

    // The control plane, as static pods.
    for (file, manifest) in specs::static_pods(l) {
        write_if_changed(&l.manifests().join(file), &manifest)?;
    }
    let kubelet = bins.path("kubelet").display().to_string();
    if running(l, "kubelet", "kubelet").is_none() {
        start(
            l,
            "kubelet",
            &[
                kubelet,
                format!("--config={}", l.state.join("kubelet.yaml").display()),
                format!(
                    "--kubeconfig={}",
                    l.pki().join("kubelet.kubeconfig").display()
                ),
                format!("--root-dir={}", l.kubelet_root().display()),
                format!("--hostname-override={NODE_NAME}"),
                format!("--node-ip={NODE_IP}"),
                "--v=1".into(),
            ],
        )?;
    }
    wait_for(
        l,
        "the API server is ready",
        Duration::from_secs(180),
        &["kubelet", "pod:etcd", "pod:kube-apiserver"],
        || kubectl_ok(l, &["get", "--raw", "/readyz"]),
    )?;

    // kube-proxy, in the requested mode.
    let current = fs::read_to_string(l.proxy_mode_file()).ok();
    let proxy_pid = running(l, "kube-proxy", "kube-proxy");
    if proxy_pid.is_some() && current.as_deref() != Some(mode.as_str()) {
        stop(l, "kube-proxy", "kube-proxy");
    }
    let proxy_config = l.state.join("kube-proxy.yaml");
    write(&proxy_config, specs::kube_proxy_config(l, mode))?;
    if running(l, "kube-proxy", "kube-proxy").is_none() {
        if current.as_deref().is_some_and(|c| c != mode.as_str()) {
            // Leave no rules of the other mode behind.
            let _ = output(
                Command::new("nsenter")
                    .arg(format!("--net=/run/netns/{NETNS}"))
                    .arg("--")
                    .arg(bins.path("kube-proxy"))
                    .arg("--cleanup"),
            );
        }
        start(
            l,
            "kube-proxy",
            &[
                bins.path("kube-proxy").display().to_string(),
                format!("--config={}", proxy_config.display()),
                "--v=1".into(),
            ],
        )?;
        fs::write(l.proxy_mode_file(), mode.as_str())?;
    }

    wait_for(
        l,
        "the node is Ready",
        Duration::from_secs(120),
        &["kubelet"],
        || {
            kubectl_out(
                l,
                &[
                    "get",
                    "node",
                    NODE_NAME,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ],
            )
            .is_some_and(|s| s.trim() == "True")
        },
    )?;
    let dns = l.state.join("coredns.yaml");
    write(&dns, specs::coredns())?;
    run(kubectl(l).args(["apply", "-f"]).arg(&dns))?;
    wait_for(
        l,
        "CoreDNS is available",
        Duration::from_secs(120),
        &["kubelet", "pod:coredns", "kube-proxy"],
        || {
            kubectl_ok(
                l,
                &[
                    "-n",
                    "kube-system",
                    "wait",
                    "--for=condition=Available",
                    "deployment/coredns",
                    "--timeout=1s",
                ],
            )
        },
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// down

/// containerd's record of its tasks: (bundle dir) holding init.pid and shim.pid.
fn task_dirs(l: &Layout) -> Vec<PathBuf> {
    let base = l.run.join("containerd/io.containerd.runtime.v2.task");
    let mut out = Vec::new();
    if let Ok(nss) = fs::read_dir(&base) {
        for ns in nss.flatten() {
            if let Ok(tasks) = fs::read_dir(ns.path()) {
                out.extend(tasks.flatten().map(|t| t.path()));
            }
        }
    }
    out
}

fn read_pid(p: &Path) -> Option<u32> {
    fs::read_to_string(p).ok()?.trim().parse().ok()
}

pub fn down(l: &Layout) -> Result<()> {
    stop(l, "kube-proxy", "kube-proxy");
    stop(l, "kubelet", "kubelet");
    // Containers: through containerd when it runs, then by the pids it recorded.
    if running(l, "containerd", "containerd").is_some() && containerd_ready(l) {
        let tasks = output(ctr(l).args(["tasks", "ls", "-q"])).unwrap_or_default();
        for id in tasks.lines().filter(|x| !x.is_empty()) {
            let _ = ctr(l)
                .args(["tasks", "kill", "-s", "SIGKILL", id])
                .stderr(Stdio::null())
                .status();
        }
    }
    for dir in task_dirs(l) {
        if let Some(pid) = read_pid(&dir.join("init.pid")) {
            // The container's first process: only if containerd's record still names a
            // live process that is not one of ours by accident (the shim is its parent).
            if alive(pid) {
                signal(pid, "KILL");
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    for dir in task_dirs(l) {
        if let Some(pid) = read_pid(&dir.join("shim.pid"))
            && exe_name(pid).is_some_and(|e| e.starts_with("containerd-shim"))
        {
            stop_pid(pid, Duration::from_secs(5));
        }
    }
    stop(l, "containerd", "containerd");

    // Mounts below the state directories (rootfs overlays, pod volumes, netns files).
    let mut ours: Vec<String> = mounts()
        .into_iter()
        .map(|(m, _)| m)
        .filter(|m| Path::new(m).starts_with(&l.state) || Path::new(m).starts_with(&l.run))
        .collect();
    ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in ours {
        let _ = Command::new("umount")
            .args(["-l", &m])
            .stderr(Stdio::null())
            .status();
    }

    // The kubelet's cgroups, in every hierarchy (v1 controllers and the cgroup2 mount).
    // Removing the cgroup2 kubepods also detaches whatever an enforcer attached there.
    for (m, t) in mounts() {
        if t == "cgroup" || t == "cgroup2" {
            remove_cgroup_tree(&Path::new(&m).join("kubepods"));
        }
    }
    // The enforcer DaemonSet's pins in the host's bpffs (see deploy/cleanup).
    let pins = Path::new("/sys/fs/bpf/enforcer");
    if pins.exists() {
        eprintln!(
            "cluster: removing the enforcer's pins under {}",
            pins.display()
        );
        let _ = fs::remove_dir_all(pins);
    }
    if netns_exists() {
        run(Command::new("ip").args(["netns", "del", NETNS]))?;
    }
    for d in [&l.state, &l.run] {
        if d.exists() {
            fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
        }
    }
    eprintln!("cluster: down");
    Ok(())
}

fn remove_cgroup_tree(dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    if let Err(e) = fs::remove_dir(dir) {
        eprintln!("cluster: could not remove cgroup {}: {e}", dir.display());
    }
}

// ---------------------------------------------------------------------------------------
// status

pub struct Status {
    lines: Vec<(String, bool, String)>,
}

impl Status {
    pub fn healthy(&self) -> bool {
        !self.lines.is_empty() && self.lines.iter().all(|(_, ok, _)| *ok)
    }
    pub fn report(&self) -> String {
        let mut s = String::new();
        for (what, ok, detail) in &self.lines {
            s.push_str(&format!(
                "{:<14} {:<5} {detail}\n",
                what,
                if *ok { "ok" } else { "NOT" }
            ));
        }
        s
    }
}

pub fn status(l: &Layout) -> Status {
    let mut lines = Vec::new();
    if !l.state.exists() {
        lines.push((
            "cluster".into(),
            false,
            "not up (cargo xtask cluster up)".into(),
        ));
        return Status { lines };
    }
    for (name, exe) in [
        ("containerd", "containerd"),
        ("kubelet", "kubelet"),
        ("kube-proxy", "kube-proxy"),
    ] {
        let pid = running(l, name, exe);
        let mut detail = pid
            .map(|p| format!("pid {p}"))
            .unwrap_or("not running".into());
        if name == "kube-proxy"
            && let Ok(m) = fs::read_to_string(l.proxy_mode_file())
        {
            detail.push_str(&format!(", mode {m}"));
        }
        lines.push((name.into(), pid.is_some(), detail));
    }
    let api = kubectl_ok(l, &["get", "--raw", "/readyz"]);
    lines.push((
        "api-server".into(),
        api,
        format!("https://{NODE_IP}:{}", super::API_PORT),
    ));
    if api {
        let pods = kubectl_out(l, &["get", "pods", "-A", "--no-headers"]).unwrap_or_default();
        for p in pods.lines() {
            let f: Vec<&str> = p.split_whitespace().collect();
            if f.len() >= 4 {
                let ready = f[2].split_once('/').is_some_and(|(a, b)| a == b);
                lines.push((
                    "pod".into(),
                    ready && f[3] == "Running",
                    format!("{}/{} {} {}", f[0], f[1], f[2], f[3]),
                ));
            }
        }
    }
    Status { lines }
}
