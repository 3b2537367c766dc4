//! Writing the desired state into the kernel maps, as diffs, in an order that never opens a
//! window: new policy entries before the identities that use them, identities before the
//! endpoints that become isolated; removals in the reverse order. Services: backend slots
//! before the frontends that count them, frontends removed before their slots.

use std::collections::BTreeMap;

use aya::maps::MapError;
use enforcer_common::{
    Backend, BackendKey, Endpoint, IpInfo, IpKey, PolicyValue, SvcKey, SvcValue,
};

use crate::{
    bpf::{BpfError, Datapath, lpm_key},
    policy::{IpPrefix, PolicyPrefix, diff},
};

/// The kernel-side picture: exactly what the agent-written maps hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MapState {
    /// cgroup id -> endpoint.
    pub endpoints: BTreeMap<u64, Endpoint>,
    pub ipcache: BTreeMap<IpPrefix, IpInfo>,
    pub policy: BTreeMap<PolicyPrefix, PolicyValue>,
    pub services: BTreeMap<SvcKey, SvcValue>,
    pub backends: BTreeMap<BackendKey, Backend>,
}

/// What one apply did.
#[derive(Debug, Default)]
pub struct ApplyStats {
    pub upserts: usize,
    pub deletes: usize,
    /// Entries the kernel refused (map full...): map name, key description, error.
    pub failures: Vec<(String, String, String)>,
}

fn describe_err(e: &BpfError) -> String {
    crate::bpf::error_chain(e)
}

fn map_err(map: &str, source: MapError) -> BpfError {
    BpfError::Map {
        map: map.into(),
        source: Box::new(source),
    }
}

/// Read what the maps hold now (after an agent restart they keep the previous state).
pub fn read_kernel_state(dp: &mut Datapath) -> Result<MapState, BpfError> {
    let mut s = MapState::default();
    {
        let eps = dp.endpoints()?;
        for item in eps.iter() {
            let (k, v) = item.map_err(|e| map_err("ENDPOINTS", e))?;
            s.endpoints.insert(k, v);
        }
    }
    {
        let ipc = dp.ipcache()?;
        for item in ipc.iter() {
            let (k, v) = item.map_err(|e| map_err("IPCACHE", e))?;
            s.ipcache.insert(
                IpPrefix {
                    len: k.prefix_len(),
                    addr: k.data().addr,
                },
                v,
            );
        }
    }
    {
        let pol = dp.policy()?;
        for item in pol.iter() {
            let (k, v) = item.map_err(|e| map_err("POLICY", e))?;
            s.policy.insert(
                PolicyPrefix {
                    len: k.prefix_len(),
                    key: k.data(),
                },
                v,
            );
        }
    }
    {
        let svc = dp.services()?;
        for item in svc.iter() {
            let (k, v) = item.map_err(|e| map_err("SERVICES", e))?;
            s.services.insert(k, v);
        }
    }
    {
        let be = dp.backends()?;
        for item in be.iter() {
            let (k, v) = item.map_err(|e| map_err("BACKENDS", e))?;
            s.backends.insert(k, v);
        }
    }
    Ok(s)
}

/// Bring the maps from `current` to `want`. Entries the kernel refuses are reported and left
/// out of `current`, so a later apply retries them; everything else is applied.
pub fn apply(
    dp: &mut Datapath,
    current: &mut MapState,
    want: &MapState,
) -> Result<ApplyStats, BpfError> {
    let mut st = ApplyStats::default();
    let d_pol = diff(&current.policy, &want.policy);
    let d_ip = diff(&current.ipcache, &want.ipcache);
    let d_ep = diff(&current.endpoints, &want.endpoints);

    {
        let mut pol = dp.policy()?;
        for (k, v) in &d_pol.upserts {
            match pol.insert(&lpm_key(k.len, k.key), v, 0) {
                Ok(()) => {
                    current.policy.insert(*k, *v);
                    st.upserts += 1;
                }
                Err(e) => st.failures.push((
                    "POLICY".into(),
                    format!("{k:?}"),
                    describe_err(&map_err("POLICY", e)),
                )),
            }
        }
    }
    {
        let mut ipc = dp.ipcache()?;
        for (k, v) in &d_ip.upserts {
            match ipc.insert(&lpm_key(k.len, IpKey { addr: k.addr }), v, 0) {
                Ok(()) => {
                    current.ipcache.insert(*k, *v);
                    st.upserts += 1;
                }
                Err(e) => st.failures.push((
                    "IPCACHE".into(),
                    format!("{k:?}"),
                    describe_err(&map_err("IPCACHE", e)),
                )),
            }
        }
    }
    {
        let mut eps = dp.endpoints()?;
        for (k, v) in &d_ep.upserts {
            match eps.insert(k, v, 0) {
                Ok(()) => {
                    current.endpoints.insert(*k, *v);
                    st.upserts += 1;
                }
                Err(e) => st.failures.push((
                    "ENDPOINTS".into(),
                    format!("cgroup {k}"),
                    describe_err(&map_err("ENDPOINTS", e)),
                )),
            }
        }
        for k in &d_ep.deletes {
            let _ = eps.remove(k);
            current.endpoints.remove(k);
            st.deletes += 1;
        }
    }
    {
        let mut ipc = dp.ipcache()?;
        for k in &d_ip.deletes {
            let _ = ipc.remove(&lpm_key(k.len, IpKey { addr: k.addr }));
            current.ipcache.remove(k);
            st.deletes += 1;
        }
    }
    {
        let mut pol = dp.policy()?;
        for k in &d_pol.deletes {
            let _ = pol.remove(&lpm_key(k.len, k.key));
            current.policy.remove(k);
            st.deletes += 1;
        }
    }
    apply_services(dp, current, want, &mut st)?;
    Ok(st)
}

/// Services: slots first (a frontend never counts a slot that is not there), then
/// frontends, then the slots no frontend counts any more.
fn apply_services(
    dp: &mut Datapath,
    current: &mut MapState,
    want: &MapState,
    st: &mut ApplyStats,
) -> Result<(), BpfError> {
    let d_svc = diff(&current.services, &want.services);
    let d_be = diff(&current.backends, &want.backends);
    if d_svc.upserts.is_empty()
        && d_svc.deletes.is_empty()
        && d_be.upserts.is_empty()
        && d_be.deletes.is_empty()
    {
        return Ok(());
    }
    let mut failed_sets = std::collections::BTreeSet::new();
    {
        let mut be = dp.backends()?;
        for (k, v) in &d_be.upserts {
            match be.insert(k, v, 0) {
                Ok(()) => {
                    current.backends.insert(*k, *v);
                    st.upserts += 1;
                }
                Err(e) => {
                    failed_sets.insert(k.set);
                    st.failures.push((
                        "BACKENDS".into(),
                        format!("set {} slot {}", k.set, k.slot),
                        describe_err(&map_err("BACKENDS", e)),
                    ))
                }
            }
        }
    }
    {
        let mut svc = dp.services()?;
        for (k, v) in &d_svc.upserts {
            // A set whose slots could not all be written counts only those before the
            // first missing one.
            let mut v = *v;
            if failed_sets.contains(&v.set) {
                v.count = (0..v.count)
                    .take_while(|slot| {
                        current.backends.contains_key(&BackendKey {
                            set: v.set,
                            slot: *slot,
                        })
                    })
                    .count() as u32;
            }
            match svc.insert(k, v, 0) {
                Ok(()) => {
                    current.services.insert(*k, v);
                    st.upserts += 1;
                }
                Err(e) => st.failures.push((
                    "SERVICES".into(),
                    format!("{k:?}"),
                    describe_err(&map_err("SERVICES", e)),
                )),
            }
        }
        for k in &d_svc.deletes {
            let _ = svc.remove(k);
            current.services.remove(k);
            st.deletes += 1;
        }
    }
    {
        let mut be = dp.backends()?;
        for k in &d_be.deletes {
            let _ = be.remove(k);
            current.backends.remove(k);
            st.deletes += 1;
        }
    }
    prune_affinity(dp, &current.backends);
    Ok(())
}

/// Forget affinities (client and per-socket) to backends their set no longer has.
fn prune_affinity(dp: &mut Datapath, backends: &BTreeMap<BackendKey, Backend>) {
    let mut live: std::collections::HashSet<(u32, Backend)> = std::collections::HashSet::new();
    for (k, b) in backends {
        live.insert((k.set, *b));
    }
    let Ok(mut aff) = dp.affinity() else {
        return;
    };
    let stale: Vec<_> = aff
        .iter()
        .filter_map(|r| r.ok())
        .filter(|(k, v)| !live.contains(&(k.set, v.backend)))
        .map(|(k, _)| k)
        .collect();
    for k in stale {
        let _ = aff.remove(&k);
    }
}
