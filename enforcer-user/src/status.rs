//! `enforcer status`: what this kernel supports, and what an instance has attached.

use std::{fmt::Write as _, fs, path::Path};

use aya::maps::{Array, HashMap, LpmTrie, MapData};
use enforcer_common::*;

use crate::{
    bpf::Datapath,
    guards::{Enforcement, Tier},
};

fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Entries in a pinned map and its capacity.
struct Fill {
    entries: usize,
    max: u32,
}

impl std::fmt::Display for Fill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = self.entries as f64 * 100.0 / f64::from(self.max.max(1));
        write!(f, "{}/{} ({pct:.1}%)", self.entries, self.max)
    }
}

fn max_entries(data: &MapData) -> u32 {
    data.info().map(|i| i.max_entries()).unwrap_or(0)
}

fn count_hash<K: aya::Pod, V: aya::Pod>(path: &Path) -> Option<Fill> {
    let data = MapData::from_pin(path).ok()?;
    let max = max_entries(&data);
    // LRU hashes iterate like hashes.
    let map = aya::maps::Map::HashMap(data);
    let h: HashMap<MapData, K, V> = HashMap::try_from(map).ok()?;
    Some(Fill {
        entries: h.keys().count(),
        max,
    })
}

/// Pending entries of ENDPOINTS (pod cgroups the agent could not classify yet): how many,
/// and the guards they carry.
fn pending_endpoints(path: &Path) -> Option<(usize, u32)> {
    let data = MapData::from_pin(path).ok()?;
    let map = aya::maps::Map::HashMap(data);
    let h: HashMap<MapData, u64, Endpoint> = HashMap::try_from(map).ok()?;
    let mut n = 0;
    let mut guards = 0;
    for (_, ep) in h.iter().flatten() {
        if ep.flags & EP_PENDING != 0 {
            n += 1;
            guards |= ep.guards_enforce;
        }
    }
    Some((n, guards))
}

fn count_lpm<K: aya::Pod, V: aya::Pod>(path: &Path) -> Option<Fill> {
    let data = MapData::from_pin(path).ok()?;
    let max = max_entries(&data);
    let map = aya::maps::Map::LpmTrie(data);
    let t: LpmTrie<MapData, K, V> = LpmTrie::try_from(map).ok()?;
    Some(Fill {
        entries: t.keys().count(),
        max,
    })
}

fn read_array<V: aya::Pod>(path: &Path) -> Option<V> {
    let data = MapData::from_pin(path).ok()?;
    let map = aya::maps::Map::Array(data);
    let a: Array<MapData, V> = Array::try_from(map).ok()?;
    a.get(&0, 0).ok()
}

/// The status report, as text.
pub fn report(instance: &Path) -> String {
    let mut out = String::new();
    let lsms = fs::read_to_string("/sys/kernel/security/lsm")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown (securityfs not mounted?)".into());
    let _ = writeln!(out, "kernel:        {}", kernel_release());
    let _ = writeln!(out, "active LSMs:   {lsms}");
    match crate::cgroup::Cgroup2Mount::detect() {
        Ok(m) => {
            let _ = writeln!(out, "cgroup2:       {}", m.path.display());
        }
        Err(e) => {
            let _ = writeln!(out, "cgroup2:       {e}");
        }
    }
    match Datapath::load(None) {
        Ok(mut dp) => {
            let probe = dp.probe_guard_tier();
            let _ = writeln!(
                out,
                "guard tier:    {} available ({})",
                probe.tier.name(),
                probe.reason
            );
            // In the LSM tier, every hook's program is loaded (not attached) as the agent
            // would: a hook this kernel refuses makes its guards fall back, alone.
            let refused = if probe.tier == Tier::Lsm {
                dp.check_lsm_programs()
            } else {
                Vec::new()
            };
            let fallback = crate::guards::support(Tier::Fallback, dp.guard_offsets());
            for s in crate::guards::support(probe.tier, dp.guard_offsets()) {
                let how = |e: Enforcement| match e {
                    Enforcement::Deny => "deny (EPERM)",
                    Enforcement::DenyOrKill => "deny or kill",
                    Enforcement::Kill => "kill (SIGKILL at syscall entry)",
                    Enforcement::Unavailable => "UNAVAILABLE",
                };
                match refused.iter().find(|(g, _)| g & s.guard != 0) {
                    Some((_, why)) => {
                        let fb = fallback
                            .iter()
                            .find(|f| f.guard == s.guard)
                            .map_or(Enforcement::Unavailable, |f| f.enforcement);
                        let _ = writeln!(
                            out,
                            "  {:<24} fallback tier: {} (the LSM program was refused: {why})",
                            s.name,
                            how(fb)
                        );
                    }
                    None => {
                        let _ = writeln!(out, "  {:<24} {}", s.name, how(s.enforcement));
                    }
                }
            }
            let exemption = if crate::guards::exemption_available(dp.guard_offsets()) {
                "available (runtime exec sessions exempt until their workload exec)"
            } else {
                "UNAVAILABLE (kernel BTF offsets missing; exec sessions are guarded)"
            };
            let _ = writeln!(out, "exemption:     {exemption}");
        }
        Err(e) => {
            let _ = writeln!(out, "guard tier:    cannot load the programs: {e}");
        }
    }
    let pins = crate::bpf::PinLayout::new(instance);
    let dir = pins.version_dir();
    if !dir.exists() {
        let _ = writeln!(out, "instance:      none at {}", instance.display());
        return out;
    }
    let _ = writeln!(out, "instance:      {}", dir.display());
    let mut links: Vec<String> = fs::read_dir(pins.links())
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    links.sort();
    let _ = writeln!(
        out,
        "  attached:    {} programs: {}",
        links.len(),
        links.join(" ")
    );
    let maps = pins.maps();
    if let Some(gc) = read_array::<GuardConfig>(&maps.join("GUARD_CONFIG")) {
        let tier = Tier::from_code(gc.tier as u8).map_or("none", |t| t.name());
        if gc.tier == TIER_LSM as u32 && gc.fallback_guards != 0 {
            let _ = writeln!(
                out,
                "  guard tier:  {tier}, fallback tier for: {}",
                crate::guards::names_of(gc.fallback_guards).join(", ")
            );
        } else {
            let _ = writeln!(out, "  guard tier:  {tier}");
        }
    }
    if let Some(cfg) = read_array::<Config>(&maps.join("CONFIG")) {
        let _ = writeln!(
            out,
            "  config:      root cgroup {} (level {}), unclassified pods {}, network audit {}, policy revision {}",
            cfg.root_cgroup_id,
            cfg.root_level,
            if cfg.flags & CFG_DENY_UNCLASSIFIED != 0 {
                "denied"
            } else {
                "allowed"
            },
            cfg.flags & CFG_NET_AUDIT != 0,
            cfg.policy_revision
        );
        let g = crate::guards::names_of(cfg.unclassified_guards);
        let _ = writeln!(
            out,
            "  unclassified: cgroups with no entry get guards {}",
            if g.is_empty() {
                "none".to_string()
            } else {
                g.join(", ")
            }
        );
        if let Some((n, guards)) = pending_endpoints(&maps.join("ENDPOINTS")) {
            let g = crate::guards::names_of(guards);
            let _ = writeln!(
                out,
                "  pending:     {n} cgroups of pods not classified yet{}",
                if n == 0 {
                    String::new()
                } else {
                    format!(", guards {}", g.join(", "))
                }
            );
        }
    }
    // Fill levels (entries/capacity): a full map makes the affected pods fail closed
    // (`enforcer_map_write_errors_total`); a full CONNTRACK evicts the least recently used
    // flows, whose next packets are judged by policy again.
    let n = |v: Option<Fill>| v.map_or("?".to_string(), |f| f.to_string());
    let _ = writeln!(out, "  map fill:");
    for (name, fill) in [
        (
            "ENDPOINTS",
            count_hash::<u64, Endpoint>(&pins.map("ENDPOINTS")),
        ),
        ("IPCACHE", count_lpm::<IpKey, IpInfo>(&pins.map("IPCACHE"))),
        (
            "POLICY",
            count_lpm::<PolicyKey, PolicyValue>(&pins.map("POLICY")),
        ),
        (
            "CONNTRACK",
            count_hash::<CtKey, CtValue>(&pins.map("CONNTRACK")),
        ),
        ("ARMED", count_hash::<u64, u32>(&pins.map("ARMED"))),
    ] {
        let _ = writeln!(out, "    {name:<12}{}", n(fill));
    }
    out
}
