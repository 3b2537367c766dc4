//! The real-cluster test tier (`cargo xtask test --tier cluster`): the enforcer DaemonSet on
//! the single-node cluster of [`super::up`], our own checks (`tests/tests/cluster_*.rs`) and
//! the upstream NetworkPolicy e2e suite, unmodified.
//!
//! 1. bring the cluster up with kube-proxy in iptables mode (unless one is running: then
//!    it is reused and left running);
//! 2. `kubectl apply -k deploy/` (the image `cargo xtask image` built, imported by `up`),
//!    wait for the DaemonSet;
//! 3. `cluster_deploy` and `cluster_node` (one test at a time);
//! 4. the upstream suite: `e2e.test` of the same release, `[sig-network] Netpol` and
//!    `NetworkPolicy` specs through ginkgo, SCTP specs skipped (this kernel has no SCTP);
//! 5. kube-proxy switched to nftables mode, the Service checks of `cluster_node` again;
//! 6. `cluster_uninstall` (the documented uninstall), then the cluster goes down if this
//!    tier brought it up.
//!
//! `cargo xtask cluster netpol-suite [--no-enforcer]` runs step 4 alone on a running
//! cluster, with the enforcer deployed or removed: without it the policy specs must fail,
//! which shows that the suite measures us.

use std::{fs, path::Path, process::Command, time::Instant};

use anyhow::{Context, Result, bail};

use super::{Layout, NETNS, ProxyMode, build, node};
use crate::{
    tiers::{self, Tally},
    util::{display, is_root, root},
};

/// Specs of the upstream suite that this machine cannot run, with the reason.
/// The first element is a ginkgo `--skip` regular expression and must also be a plain
/// substring of the names it skips (the tally finds the reason by substring). Only the
/// specs that open SCTP sockets: the two TCP specs about SCTP policies run.
const UPSTREAM_SKIPS: &[(&str, &str)] = &[(
    "[Feature:SCTPConnectivity]",
    "this kernel has no SCTP (socket(IPPROTO_SCTP) fails with EPROTONOSUPPORT)",
)];

/// Parallel ginkgo processes for the upstream suite (each runs one spec at a time).
const UPSTREAM_PROCS: u32 = 4;

pub fn run(filter: Option<&str>) -> Result<Tally> {
    let mut t = Tally::new("cluster");
    let start = Instant::now();
    if !is_root() {
        t.not_run = Some("needs root (containerd, kubelet, network namespaces)".into());
        return Ok(t);
    }
    let layout = Layout::default();
    let brought_up = !node::status(&layout).healthy();
    let result = run_steps(&layout, filter, &mut t);
    if brought_up {
        if let Err(e) = super::down(&layout) {
            eprintln!("cluster: taking the cluster down failed: {e:#}");
        }
    } else {
        eprintln!("cluster: it was running before this tier: left running");
    }
    if let Err(e) = result {
        t.failed.push(format!("cluster tier: {e:#}"));
    }
    t.secs = start.elapsed().as_secs_f64();
    Ok(t)
}

fn run_steps(layout: &Layout, filter: Option<&str>, t: &mut Tally) -> Result<()> {
    let step = Instant::now();
    super::up(layout, ProxyMode::Iptables)?;
    eprintln!("cluster: up ({:.0}s)", step.elapsed().as_secs_f64());
    tiers::build_agent()?;
    deploy(layout)?;
    ours(&["cluster_deploy", "cluster_node"], filter, t)?;
    if filter.is_none() {
        upstream(layout, t)?;
    }
    let step = Instant::now();
    super::up(layout, ProxyMode::Nftables)?;
    eprintln!(
        "cluster: kube-proxy in nftables mode ({:.0}s)",
        step.elapsed().as_secs_f64()
    );
    ours(&["cluster_node"], Some(filter.unwrap_or("services")), t)?;
    ours(&["cluster_uninstall"], None, t)?;
    Ok(())
}

fn kubectl(layout: &Layout) -> Command {
    Command::new(layout.kubectl())
}

fn sh(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {}", display(cmd));
    let st = cmd.status().with_context(|| display(cmd))?;
    if !st.success() {
        bail!("{} failed ({st})", display(cmd));
    }
    Ok(())
}

/// `kubectl apply -k deploy/` and wait for the DaemonSet.
pub fn deploy(layout: &Layout) -> Result<()> {
    let deploy = root().join("deploy");
    sh(kubectl(layout).arg("apply").arg("-k").arg(&deploy))?;
    // The image keeps its tag when `up` imports a rebuilt one: restart the pods so that
    // they run what was just built.
    sh(kubectl(layout).args(["-n", "enforcer-system", "rollout", "restart", "ds/enforcer"]))?;
    let ready = sh(kubectl(layout).args([
        "-n",
        "enforcer-system",
        "rollout",
        "status",
        "ds/enforcer",
        "--timeout=240s",
    ]));
    if ready.is_err() {
        // What the agent said is what a user needs to see.
        let _ = sh(kubectl(layout).args([
            "-n",
            "enforcer-system",
            "logs",
            "ds/enforcer",
            "--all-containers",
            "--tail=60",
        ]));
    }
    ready
}

/// Our `cluster_*` suites, one test at a time.
fn ours(suites: &[&str], filter: Option<&str>, t: &mut Tally) -> Result<()> {
    let exes = tiers::test_executables()?;
    for suite in suites {
        let Some((_, exe)) = exes.iter().find(|(n, _)| n == suite) else {
            bail!("test suite {suite} not built");
        };
        let mut cmd = Command::new(exe);
        cmd.arg("--test-threads=1")
            .env("ENFORCER_CLUSTER", "1")
            .env("RUST_BACKTRACE", "1")
            .current_dir(root());
        if let Some(f) = filter {
            cmd.arg(f);
        }
        let ok = tiers::run_libtest(&mut cmd, t, None)?;
        if !ok && t.failed.is_empty() {
            t.failed.push(format!("{suite} (harness failure)"));
        }
    }
    Ok(())
}

/// Results of the upstream suite, from its JUnit report.
#[derive(Debug, Default)]
pub struct Upstream {
    pub passed: Vec<String>,
    pub failed: Vec<String>,
    pub skipped: Vec<String>,
    pub secs: f64,
}

/// Run the upstream NetworkPolicy specs and add them to `t`.
fn upstream(layout: &Layout, t: &mut Tally) -> Result<()> {
    let u = netpol_suite(layout)?;
    t.passed += u.passed.len();
    t.failed
        .extend(u.failed.iter().map(|n| format!("upstream: {n}")));
    let skip_reason = |n: &str| {
        UPSTREAM_SKIPS
            .iter()
            .find(|(k, _)| n.contains(k))
            .map_or("skipped by the suite itself", |(_, r)| *r)
    };
    t.skipped.extend(
        u.skipped
            .iter()
            .map(|n| (format!("upstream: {n}"), skip_reason(n).to_string())),
    );
    Ok(())
}

/// ginkgo + e2e.test inside the node's network namespace; the parsed JUnit report.
pub fn netpol_suite(layout: &Layout) -> Result<Upstream> {
    let bins = build::build()?;
    let report = root().join("target/cluster-e2e");
    let _ = fs::remove_dir_all(&report);
    fs::create_dir_all(&report)?;
    let skip = UPSTREAM_SKIPS
        .iter()
        .map(|(k, _)| k.replace('[', r"\[").replace(']', r"\]"))
        .collect::<Vec<_>>()
        .join("|");
    let start = Instant::now();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", NETNS])
        .arg(bins.path("ginkgo"))
        .arg(format!("--procs={UPSTREAM_PROCS}"))
        .arg("--timeout=40m")
        .arg("--no-color")
        .arg(format!(
            "--junit-report={}",
            report.join("junit.xml").display()
        ))
        .arg(r"--focus=\[sig-network\] (Netpol|NetworkPolicy)")
        .arg(format!("--skip={skip}"))
        .arg(bins.path("e2e.test"))
        .arg("--")
        .arg(format!(
            "--kubeconfig={}",
            layout.admin_kubeconfig().display()
        ))
        .arg(format!("--kubectl-path={}", bins.path("kubectl").display()))
        .arg("--provider=skeleton")
        .arg("--num-nodes=1")
        .arg(format!("--report-dir={}", report.display()))
        .current_dir(&report);
    eprintln!("+ {}", display(&cmd));
    let st = cmd.status().with_context(|| display(&cmd))?;
    let mut u = parse_junit(&report.join("junit.xml"))?;
    // The report lists every spec of e2e.test; those outside the focus are not ours.
    u.skipped.retain(|n| focused(n));
    u.secs = start.elapsed().as_secs_f64();
    eprintln!(
        "upstream NetworkPolicy suite: {} passed, {} failed, {} skipped in {:.0}s (ginkgo {st})",
        u.passed.len(),
        u.failed.len(),
        u.skipped.len(),
        u.secs
    );
    for f in &u.failed {
        eprintln!("  FAILED {f}");
    }
    if u.passed.is_empty() && u.failed.is_empty() {
        bail!("the upstream suite ran no spec ({st}); see the output above");
    }
    Ok(u)
}

/// Is this spec one of the focus (`[sig-network] Netpol ...`, `... NetworkPolicy ...`)?
fn focused(name: &str) -> bool {
    name.contains("[sig-network]") && (name.contains("Netpol") || name.contains("NetworkPolicy"))
}

/// Testcases of a JUnit report: name and outcome (only what ginkgo writes).
pub fn parse_junit(path: &Path) -> Result<Upstream> {
    let text = fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let mut u = Upstream::default();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("<testcase") {
        rest = &rest[i + "<testcase".len()..];
        let head_end = rest.find('>').unwrap_or(rest.len());
        let head = &rest[..head_end];
        let name = attr(head, "name").unwrap_or_default();
        let self_closing = head.ends_with('/');
        let body = if self_closing {
            ""
        } else {
            let end = rest.find("</testcase>").unwrap_or(rest.len());
            &rest[head_end..end]
        };
        let status = attr(head, "status").unwrap_or_default();
        // ginkgo lists the suite's setup nodes as testcases too.
        if name.starts_with("[SynchronizedBeforeSuite]")
            || name.starts_with("[SynchronizedAfterSuite]")
            || name.starts_with("[ReportAfterSuite]")
            || name.starts_with("[ReportBeforeSuite]")
        {
            if body.contains("<failure") || body.contains("<error") {
                u.failed.push(name);
            }
            continue;
        }
        if body.contains("<failure") || body.contains("<error") {
            u.failed.push(name);
        } else if body.contains("<skipped") || status == "skipped" || status == "pending" {
            u.skipped.push(name);
        } else {
            u.passed.push(name);
        }
    }
    Ok(u)
}

fn attr(head: &str, key: &str) -> Option<String> {
    let pat = format!(" {key}=\"");
    let i = head.find(&pat)? + pat.len();
    let j = head[i..].find('"')? + i;
    Some(
        head[i..j]
            .replace("&#34;", "\"")
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&#39;", "'"),
    )
}

/// `cargo xtask cluster netpol-suite [--no-enforcer]`.
pub fn netpol_suite_cmd(layout: &Layout, no_enforcer: bool) -> Result<()> {
    if !node::status(layout).healthy() {
        bail!("no healthy cluster: `cargo xtask cluster up` first");
    }
    if no_enforcer {
        let _ = sh(kubectl(layout)
            .args(["delete", "-k"])
            .arg(root().join("deploy"))
            .arg("--ignore-not-found"));
        // The pinned programs keep enforcing after the DaemonSet is gone: detach them.
        let agent = tiers::agent_path();
        let _ = sh(Command::new(agent).args(["uninstall", "--bpffs", "/sys/fs/bpf/enforcer"]));
    } else {
        tiers::build_agent()?;
        deploy(layout)?;
    }
    let u = netpol_suite(layout)?;
    println!(
        "upstream NetworkPolicy suite ({}): {} passed, {} failed, {} skipped in {:.0}s",
        if no_enforcer {
            "no enforcer"
        } else {
            "with enforcer"
        },
        u.passed.len(),
        u.failed.len(),
        u.skipped.len(),
        u.secs
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_outcomes() {
        let dir = std::env::temp_dir().join(format!("junit-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("j.xml");
        fs::write(
            &p,
            r#"<testsuites><testsuite>
<testcase name="[SynchronizedBeforeSuite]" status="passed"></testcase>
<testcase name="[sig-network] Netpol a &#34;b&#34;" status="passed" time="3"></testcase>
<testcase name="[sig-network] Netpol c" status="failed"><failure message="x">boom</failure></testcase>
<testcase name="[sig-network] Netpol SCTP d" status="skipped"><skipped message="skip"></skipped></testcase>
</testsuite></testsuites>"#,
        )
        .unwrap();
        let u = parse_junit(&p).unwrap();
        assert_eq!(u.passed, vec!["[sig-network] Netpol a \"b\"".to_string()]);
        assert_eq!(u.failed, vec!["[sig-network] Netpol c".to_string()]);
        assert_eq!(u.skipped, vec!["[sig-network] Netpol SCTP d".to_string()]);
        assert!(focused("[sig-network] Netpol SCTP d"));
        assert!(focused(
            "[It] [sig-network] NetworkPolicy API should support creating"
        ));
        assert!(!focused(
            "[It] [sig-storage] In-tree Volumes [Driver: local]"
        ));
        let _ = fs::remove_dir_all(&dir);
    }
}
