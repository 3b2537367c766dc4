//! Prefix arithmetic for the two LPM tries: address prefixes for `IPCACHE`, port ranges
//! and key masking for `POLICY`.

use std::net::IpAddr;

use enforcer_common::{POLICY_PREFIX_ANY_PORT, POLICY_PREFIX_FULL, PolicyKey, v4_mapped};
use ipnet::IpNet;

use super::{IpPrefix, PolicyPrefix};

/// Prefix length of the IPv4-mapped range `::ffff:0:0/96`: an IPv4 `/n` is a `/(96 + n)`.
pub(super) const V4_MAPPED_LEN: u32 = 96;

/// `addr` with every bit after the first `len` cleared.
fn mask128(addr: [u8; 16], len: u32) -> [u8; 16] {
    let bits = u128::from_be_bytes(addr);
    let keep = match len {
        0 => 0,
        1..=127 => u128::MAX << (128 - len),
        _ => u128::MAX,
    };
    (bits & keep).to_be_bytes()
}

impl IpPrefix {
    /// The prefix of length `len` (at most 128) containing `addr`.
    pub fn new(len: u32, addr: [u8; 16]) -> Self {
        let len = len.min(128);
        Self {
            len,
            addr: mask128(addr, len),
        }
    }

    /// The trie form of a CIDR (IPv4 in the IPv4-mapped range).
    pub fn from_net(net: &IpNet) -> Self {
        match net {
            IpNet::V4(n) => Self::new(
                V4_MAPPED_LEN + u32::from(n.prefix_len()),
                v4_mapped(n.network().octets()),
            ),
            IpNet::V6(n) => Self::new(u32::from(n.prefix_len()), n.network().octets()),
        }
    }

    /// The exact (/128) entry of one address. An IPv4-mapped IPv6 address is the same
    /// key as the IPv4 address, as it is for the datapath.
    pub fn host(ip: IpAddr) -> Self {
        let addr = match ip.to_canonical() {
            IpAddr::V4(v4) => v4_mapped(v4.octets()),
            IpAddr::V6(v6) => v6.octets(),
        };
        Self { len: 128, addr }
    }

    /// Whether every address of `other` is in `self`.
    pub fn contains(&self, other: &IpPrefix) -> bool {
        self.len <= other.len && mask128(other.addr, self.len) == self.addr
    }

    /// Whether the prefix lies in the IPv4-mapped range, i.e. holds IPv4 addresses only.
    /// The datapath sees every IPv4 address there, so addresses there are IPv4 whatever
    /// family a policy wrote them in.
    pub fn is_v4(&self) -> bool {
        self.len >= V4_MAPPED_LEN && self.addr[..12] == v4_mapped([0; 4])[..12]
    }

    /// The IPv4-mapped range itself: the trie form of `0.0.0.0/0`.
    pub(super) fn v4_all() -> Self {
        Self::new(V4_MAPPED_LEN, v4_mapped([0; 4]))
    }
}

/// The bytes of a `PolicyKey` as the kernel sees them (its `repr(C)` memory layout, which
/// is what the LPM trie compares bit by bit).
pub(super) fn policy_key_bytes(k: &PolicyKey) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[0..4].copy_from_slice(&k.endpoint.to_ne_bytes());
    b[4..8].copy_from_slice(&k.identity.to_ne_bytes());
    b[8] = k.direction;
    b[9] = k.protocol;
    b[10..12].copy_from_slice(&k.port);
    b
}

/// Inverse of [`policy_key_bytes`].
pub(super) fn policy_key_from_bytes(b: &[u8; 12]) -> PolicyKey {
    PolicyKey {
        endpoint: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        identity: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        direction: b[8],
        protocol: b[9],
        port: [b[10], b[11]],
    }
}

impl PolicyPrefix {
    /// The prefix of length `len` (at most 96) of `key`, bits beyond `len` cleared.
    pub fn new(len: u32, key: PolicyKey) -> Self {
        let len = len.min(POLICY_PREFIX_FULL);
        let mut bytes = policy_key_bytes(&key);
        for (i, byte) in bytes.iter_mut().enumerate() {
            let start = i as u32 * 8;
            if start >= len {
                *byte = 0;
            } else if len - start < 8 {
                *byte &= 0xffu8 << (8 - (len - start));
            }
        }
        Self {
            len,
            key: policy_key_from_bytes(&bytes),
        }
    }
}

/// Split an inclusive port range into aligned prefix blocks: Vec<(prefix_len in 80..=96, start_port)>
///
/// Each block `(80 + k, p)` covers the 2^(16-k) ports from `p`, with `p` a multiple of the
/// block size, which is exactly what a `POLICY` prefix of that length matches. Blocks come
/// in increasing port order, are disjoint, cover exactly `start..=end`, and are as few as
/// possible (the greedy choice of the largest aligned block at each step is optimal). An
/// empty range (`start > end`) gives no blocks.
pub fn port_range_prefixes(start: u16, end: u16) -> Vec<(u32, u16)> {
    let mut blocks = Vec::new();
    let (mut lo, hi) = (u32::from(start), u32::from(end));
    while lo <= hi {
        // The largest block aligned at `lo` (0 is aligned on everything)...
        let mut bits = if lo == 0 {
            16
        } else {
            lo.trailing_zeros().min(16)
        };
        // ...that does not run past `hi`.
        while lo + (1 << bits) - 1 > hi {
            bits -= 1;
        }
        blocks.push((POLICY_PREFIX_FULL - bits, lo as u16));
        lo += 1 << bits;
    }
    debug_assert!(
        blocks
            .iter()
            .all(|(len, _)| (POLICY_PREFIX_ANY_PORT..=POLICY_PREFIX_FULL).contains(len))
    );
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn ip_prefix_forms() {
        let p = IpPrefix::from_net(&net("10.1.2.3/8"));
        assert_eq!(p.len, 104);
        assert_eq!(p.addr, v4_mapped([10, 0, 0, 0]));
        assert!(p.is_v4());
        assert_eq!(p.to_string(), "10.0.0.0/8");

        let p = IpPrefix::from_net(&net("fd00::1/64"));
        assert_eq!(p.len, 64);
        assert!(!p.is_v4());
        assert_eq!(p.to_string(), "fd00::/64");

        assert_eq!(IpPrefix::from_net(&net("0.0.0.0/0")), IpPrefix::v4_all());
        assert_eq!(IpPrefix::v4_all().to_string(), "0.0.0.0/0");
        assert_eq!(IpPrefix::from_net(&net("::/0")).to_string(), "::/0");

        let h = IpPrefix::host("10.0.0.7".parse().unwrap());
        assert_eq!(h, IpPrefix::host("::ffff:10.0.0.7".parse().unwrap()));
        assert_eq!(h.to_string(), "10.0.0.7/32");
        assert!(p.contains(&p));
        assert!(IpPrefix::from_net(&net("10.0.0.0/8")).contains(&h));
        assert!(
            !IpPrefix::from_net(&net("10.0.0.0/30"))
                .contains(&IpPrefix::from_net(&net("10.0.0.0/8")))
        );
        assert!(IpPrefix::from_net(&net("::/0")).contains(&h));
        assert!(!IpPrefix::from_net(&net("::/0")).is_v4());
    }

    #[test]
    fn policy_prefix_masks_beyond_len() {
        let key = PolicyKey {
            endpoint: 0x0102_0304,
            identity: 0xa0b0_c0d0,
            direction: 1,
            protocol: 6,
            port: 0xffffu16.to_be_bytes(),
        };
        let p = PolicyPrefix::new(72, key);
        assert_eq!((p.key.protocol, p.key.port), (0, [0, 0]));
        assert_eq!(
            (p.key.endpoint, p.key.identity, p.key.direction),
            (0x0102_0304, 0xa0b0_c0d0, 1)
        );
        let p = PolicyPrefix::new(80, key);
        assert_eq!((p.key.protocol, p.key.port), (6, [0, 0]));
        let p = PolicyPrefix::new(84, key);
        assert_eq!(p.key.port, [0xf0, 0]);
        let p = PolicyPrefix::new(95, key);
        assert_eq!(p.key.port, [0xff, 0xfe]);
        assert_eq!(PolicyPrefix::new(96, key).key, key);
        assert_eq!(policy_key_from_bytes(&policy_key_bytes(&key)), key);
    }

    /// Check the contract of `port_range_prefixes` for one range against brute force.
    fn check_range(start: u16, end: u16, every_port: bool) {
        let blocks = port_range_prefixes(start, end);
        if start > end {
            assert!(blocks.is_empty());
            return;
        }
        let mut expect = u32::from(start);
        for (i, &(len, first)) in blocks.iter().enumerate() {
            assert!((80..=96).contains(&len), "{start}-{end}: len {len}");
            let size = 1u32 << (96 - len);
            assert_eq!(u32::from(first), expect, "{start}-{end}: gap or overlap");
            assert_eq!(u32::from(first) % size, 0, "{start}-{end}: misaligned");
            expect += size;
            // Minimal: two neighbouring blocks of one size never form an aligned block of
            // twice that size (the greedy would have taken the bigger one).
            if let Some(&(next_len, _)) = blocks.get(i + 1) {
                assert!(
                    !(next_len == len && u32::from(first) % (2 * size) == 0),
                    "{start}-{end}: mergeable blocks"
                );
            }
        }
        assert_eq!(expect, u32::from(end) + 1, "{start}-{end}: wrong end");
        assert!(blocks.len() <= 30);
        if every_port {
            // Membership through the LPM view: a port is matched iff its top `len - 80`
            // bits equal the block's.
            for p in 0..=u16::MAX {
                let matched = blocks.iter().any(|&(len, first)| {
                    let keep = len - 80;
                    let mask = if keep == 0 {
                        0
                    } else {
                        u16::MAX << (16 - keep)
                    };
                    p & mask == first
                });
                assert_eq!(
                    matched,
                    (start..=end).contains(&p),
                    "{start}-{end}: port {p}"
                );
            }
        }
    }

    #[test]
    fn port_ranges_edges() {
        assert_eq!(port_range_prefixes(0, 65535), vec![(80, 0)]);
        assert_eq!(port_range_prefixes(80, 80), vec![(96, 80)]);
        assert_eq!(port_range_prefixes(65535, 65535), vec![(96, 65535)]);
        assert_eq!(port_range_prefixes(1, 0), vec![]);
        assert_eq!(port_range_prefixes(32768, 65535), vec![(81, 32768)]);
        assert_eq!(
            port_range_prefixes(80, 90),
            vec![(93, 80), (95, 88), (96, 90)]
        );
        assert_eq!(port_range_prefixes(1, 65535).len(), 16);
        assert_eq!(port_range_prefixes(1, 65534).len(), 30);
        for (s, e) in [
            (0, 0),
            (0, 1),
            (1, 65535),
            (1, 65534),
            (0, 65534),
            (65534, 65535),
        ] {
            check_range(s, e, true);
        }
    }

    #[test]
    fn port_ranges_exhaustive_small() {
        for s in 0..=300u16 {
            for e in s.saturating_sub(2)..=300 {
                check_range(s, e, false);
            }
        }
    }

    #[test]
    fn port_ranges_random_against_brute_force() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..3000 {
            let a = next() as u16;
            // Mix wide and narrow ranges.
            let b = if i % 2 == 0 {
                next() as u16
            } else {
                a.saturating_add((next() % 700) as u16)
            };
            let (s, e) = (a.min(b), a.max(b));
            check_range(s, e, i < 60);
        }
    }
}
