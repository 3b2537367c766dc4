//! Writing the desired state into the kernel maps, as diffs, in an order that never opens a
//! window: new policy entries before the identities that use them, identities before the
//! endpoints that become isolated; removals in the reverse order.

use std::collections::BTreeMap;

use aya::maps::MapError;
use enforcer_common::{Endpoint, IpInfo, IpKey, PolicyValue};

use crate::{
    bpf::{BpfError, Datapath, lpm_key},
    policy::{IpPrefix, PolicyPrefix, diff},
};

/// The kernel-side picture: exactly what the three maps hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MapState {
    /// cgroup id -> endpoint.
    pub endpoints: BTreeMap<u64, Endpoint>,
    pub ipcache: BTreeMap<IpPrefix, IpInfo>,
    pub policy: BTreeMap<PolicyPrefix, PolicyValue>,
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
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
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
    Ok(st)
}
