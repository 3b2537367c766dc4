//! Kernel struct offsets for the guard programs, resolved from the running kernel's BTF.
//!
//! Rust BPF has no CO-RE relocations, so the programs cannot be compiled against kernel
//! struct layouts. Instead the agent resolves every field they read here, at load time,
//! into a `KernelOffsets` that it writes into the object's read-only global
//! `GUARD_OFFSETS` before loading (the verifier then sees constants) and the programs read
//! fields with `bpf_probe_read_kernel(base + offset)`. A field that is missing (or has an
//! unexpected size) leaves its `OFF_*` bit clear: the programs never read it, and the
//! guards that need it are reported unavailable with the struct and field named.

use enforcer_common::*;

use super::btf::{FieldError, KernelBtf};

/// One field a guard program reads.
#[derive(Clone, Copy, Debug)]
pub struct FieldSpec {
    /// `OFF_*` bit.
    pub bit: u64,
    pub structure: &'static str,
    /// Member path; alternatives for kernels that renamed it, first match wins.
    pub paths: &'static [&'static str],
    /// Expected size in bytes.
    pub size: u32,
}

/// Every field, in `KernelOffsets` order (except the architecture-specific registers).
pub const FIELDS: &[FieldSpec] = &[
    FieldSpec {
        bit: OFF_TASK_CRED,
        structure: "task_struct",
        paths: &["cred"],
        size: 8,
    },
    FieldSpec {
        bit: OFF_TASK_TGID,
        structure: "task_struct",
        paths: &["tgid"],
        size: 4,
    },
    FieldSpec {
        bit: OFF_TASK_CGROUPS,
        structure: "task_struct",
        paths: &["cgroups"],
        size: 8,
    },
    FieldSpec {
        bit: OFF_CSS_SET_DFL_CGRP,
        structure: "css_set",
        paths: &["dfl_cgrp"],
        size: 8,
    },
    FieldSpec {
        bit: OFF_CGROUP_KN,
        structure: "cgroup",
        paths: &["kn"],
        size: 8,
    },
    FieldSpec {
        bit: OFF_KERNFS_NODE_ID,
        structure: "kernfs_node",
        paths: &["id"],
        size: 8,
    },
    FieldSpec {
        bit: OFF_KERNFS_NODE_PARENT,
        structure: "kernfs_node",
        // Renamed to __parent (RCU-protected) in 6.15.
        paths: &["parent", "__parent"],
        size: 8,
    },
    FieldSpec {
        bit: OFF_TASK_THREAD_PID,
        structure: "task_struct",
        paths: &["thread_pid"],
        size: 8,
    },
    FieldSpec {
        bit: OFF_PID_LEVEL,
        structure: "pid",
        paths: &["level"],
        size: 4,
    },
    FieldSpec {
        bit: OFF_CRED_UID,
        structure: "cred",
        paths: &["uid"],
        size: 4,
    },
    FieldSpec {
        bit: OFF_CRED_SUID,
        structure: "cred",
        paths: &["suid"],
        size: 4,
    },
    FieldSpec {
        bit: OFF_CRED_EUID,
        structure: "cred",
        paths: &["euid"],
        size: 4,
    },
    FieldSpec {
        bit: OFF_CRED_FSUID,
        structure: "cred",
        paths: &["fsuid"],
        size: 4,
    },
    FieldSpec {
        bit: OFF_CRED_GID,
        structure: "cred",
        paths: &["gid"],
        size: 4,
    },
    FieldSpec {
        bit: OFF_CRED_SGID,
        structure: "cred",
        paths: &["sgid"],
        size: 4,
    },
    FieldSpec {
        bit: OFF_CRED_EGID,
        structure: "cred",
        paths: &["egid"],
        size: 4,
    },
    FieldSpec {
        bit: OFF_CRED_FSGID,
        structure: "cred",
        paths: &["fsgid"],
        size: 4,
    },
    FieldSpec {
        bit: OFF_CRED_CAP_PERMITTED,
        structure: "cred",
        paths: &["cap_permitted"],
        size: 8,
    },
    FieldSpec {
        bit: OFF_CRED_CAP_AMBIENT,
        structure: "cred",
        paths: &["cap_ambient"],
        size: 8,
    },
    FieldSpec {
        bit: OFF_BINPRM_CRED,
        structure: "linux_binprm",
        paths: &["cred"],
        size: 8,
    },
    FieldSpec {
        bit: OFF_BINPRM_FILENAME,
        structure: "linux_binprm",
        paths: &["filename"],
        size: 8,
    },
    FieldSpec {
        bit: OFF_TASK_TI_STATUS,
        structure: "task_struct",
        paths: &["thread_info.status"],
        size: 4,
    },
    FieldSpec {
        bit: OFF_TASK_NSPROXY,
        structure: "task_struct",
        paths: &["nsproxy"],
        size: 8,
    },
    FieldSpec {
        bit: OFF_NSPROXY_MNT_NS,
        structure: "nsproxy",
        paths: &["mnt_ns"],
        size: 8,
    },
    FieldSpec {
        bit: OFF_MNT_NS_INUM,
        structure: "mnt_namespace",
        paths: &["ns.inum"],
        size: 4,
    },
];

/// A field that could not be resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingField {
    pub bit: u64,
    /// `struct.member` as the programs need it.
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for MissingField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// The outcome of resolving every field.
#[derive(Clone, Debug)]
pub struct ResolvedOffsets {
    pub offsets: KernelOffsets,
    pub missing: Vec<MissingField>,
}

impl ResolvedOffsets {
    /// Nothing resolved (no BTF): every field missing with `reason`.
    pub fn unresolved(reason: &str) -> Self {
        let mut missing: Vec<MissingField> = FIELDS
            .iter()
            .map(|f| MissingField {
                bit: f.bit,
                field: format!("{}.{}", f.structure, f.paths[0]),
                reason: reason.into(),
            })
            .collect();
        for (bit, field) in [
            (OFF_REGS_ARGS, "pt_regs (syscall arguments)"),
            (OFF_COMPAT_REGS_ARGS, "pt_regs (compat syscall arguments)"),
        ] {
            missing.push(MissingField {
                bit,
                field: field.into(),
                reason: reason.into(),
            });
        }
        Self {
            offsets: KernelOffsets::UNRESOLVED,
            missing,
        }
    }

    /// The missing fields among `bits`.
    pub fn missing_of(&self, bits: u64) -> Vec<&MissingField> {
        self.missing.iter().filter(|m| m.bit & bits != 0).collect()
    }
}

fn set(o: &mut KernelOffsets, bit: u64, v: u32) {
    match bit {
        OFF_TASK_CRED => o.task_cred = v,
        OFF_TASK_TGID => o.task_tgid = v,
        OFF_TASK_CGROUPS => o.task_cgroups = v,
        OFF_CSS_SET_DFL_CGRP => o.css_set_dfl_cgrp = v,
        OFF_CGROUP_KN => o.cgroup_kn = v,
        OFF_KERNFS_NODE_ID => o.kernfs_node_id = v,
        OFF_KERNFS_NODE_PARENT => o.kernfs_node_parent = v,
        OFF_TASK_THREAD_PID => o.task_thread_pid = v,
        OFF_PID_LEVEL => o.pid_level = v,
        OFF_CRED_UID => o.cred_uid = v,
        OFF_CRED_SUID => o.cred_suid = v,
        OFF_CRED_EUID => o.cred_euid = v,
        OFF_CRED_FSUID => o.cred_fsuid = v,
        OFF_CRED_CAP_PERMITTED => o.cred_cap_permitted = v,
        OFF_CRED_CAP_AMBIENT => o.cred_cap_ambient = v,
        OFF_BINPRM_CRED => o.binprm_cred = v,
        OFF_BINPRM_FILENAME => o.binprm_filename = v,
        OFF_TASK_TI_STATUS => o.task_ti_status = v,
        OFF_TASK_NSPROXY => o.task_nsproxy = v,
        OFF_NSPROXY_MNT_NS => o.nsproxy_mnt_ns = v,
        OFF_MNT_NS_INUM => o.mnt_ns_inum = v,
        OFF_CRED_GID => o.cred_gid = v,
        OFF_CRED_SGID => o.cred_sgid = v,
        OFF_CRED_EGID => o.cred_egid = v,
        OFF_CRED_FSGID => o.cred_fsgid = v,
        _ => unreachable!("unknown offset bit {bit:#x}"),
    }
}

/// CPU architectures whose syscall registers we know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    pub fn host() -> Option<Arch> {
        if cfg!(target_arch = "x86_64") {
            Some(Arch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Arch::Aarch64)
        } else {
            None
        }
    }
}

/// x86 `TS_COMPAT` (thread_info.status): the current syscall is a 32-bit one.
const X86_TS_COMPAT: u32 = 0x0002;

fn resolve_regs(btf: &KernelBtf, arch: Option<Arch>, r: &mut ResolvedOffsets) {
    let o = &mut r.offsets;
    let regs = |names: [&str; 6]| -> Result<[u32; 6], String> {
        let mut out = [0u32; 6];
        for (i, n) in names.iter().enumerate() {
            let f = btf.field("pt_regs", n).map_err(|e| e.to_string())?;
            if f.size != 8 {
                return Err(format!("pt_regs.{n} has size {}, expected 8", f.size));
            }
            out[i] = f.offset;
        }
        Ok(out)
    };
    match arch {
        Some(Arch::X86_64) => {
            match regs(["di", "si", "dx", "r10", "r8", "r9"]) {
                Ok(v) => {
                    o.regs_args = v;
                    o.present |= OFF_REGS_ARGS;
                }
                Err(reason) => r.missing.push(MissingField {
                    bit: OFF_REGS_ARGS,
                    field: "pt_regs.{di,si,dx,r10,r8,r9}".into(),
                    reason,
                }),
            }
            match regs(["bx", "cx", "dx", "si", "di", "bp"]) {
                Ok(v) => {
                    o.compat_regs_args = v;
                    o.present |= OFF_COMPAT_REGS_ARGS;
                    o.ti_status_compat = X86_TS_COMPAT;
                }
                Err(reason) => r.missing.push(MissingField {
                    bit: OFF_COMPAT_REGS_ARGS,
                    field: "pt_regs.{bx,cx,dx,si,di,bp}".into(),
                    reason,
                }),
            }
        }
        Some(Arch::Aarch64) => match btf.field("pt_regs", "regs") {
            Ok(f) if f.size >= 6 * 8 => {
                for i in 0..6 {
                    o.regs_args[i] = f.offset + 8 * i as u32;
                }
                o.present |= OFF_REGS_ARGS;
                // AArch32 tasks are not told apart (no compat table): see the fallback
                // module's limits.
            }
            other => r.missing.push(MissingField {
                bit: OFF_REGS_ARGS,
                field: "pt_regs.regs".into(),
                reason: match other {
                    Ok(f) => format!("unexpected size {}", f.size),
                    Err(e) => e.to_string(),
                },
            }),
        },
        None => r.missing.push(MissingField {
            bit: OFF_REGS_ARGS,
            field: "pt_regs".into(),
            reason: "syscall registers of this CPU architecture are not known".into(),
        }),
    }
}

/// Resolve every field against `btf` for `arch`.
pub fn resolve(btf: &KernelBtf, arch: Option<Arch>) -> ResolvedOffsets {
    let mut r = ResolvedOffsets {
        offsets: KernelOffsets::UNRESOLVED,
        missing: Vec::new(),
    };
    for spec in FIELDS {
        let mut last: Option<FieldError> = None;
        let mut found = None;
        for path in spec.paths {
            match btf.field(spec.structure, path) {
                Ok(f) => {
                    found = Some((path, f));
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        match found {
            Some((_, f)) if f.size == spec.size => {
                set(&mut r.offsets, spec.bit, f.offset);
                r.offsets.present |= spec.bit;
            }
            Some((path, f)) => r.missing.push(MissingField {
                bit: spec.bit,
                field: format!("{}.{}", spec.structure, path),
                reason: format!("has size {}, expected {}", f.size, spec.size),
            }),
            None => r.missing.push(MissingField {
                bit: spec.bit,
                field: format!("{}.{}", spec.structure, spec.paths.join("|")),
                reason: last.map(|e| e.to_string()).unwrap_or_default(),
            }),
        }
    }
    resolve_regs(btf, arch, &mut r);
    r
}

/// Resolve against the running kernel (`/sys/kernel/btf/vmlinux`). Without BTF nothing is
/// resolved and every field is reported missing with the reason.
pub fn resolve_host() -> ResolvedOffsets {
    match KernelBtf::from_sys_fs() {
        Ok(btf) => resolve(&btf, Arch::host()),
        Err(e) => ResolvedOffsets::unresolved(&e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guards::btf::tests::{Builder, host};

    #[test]
    fn host_kernel_resolves_every_field() {
        let Some(btf) = host() else { return };
        let r = resolve(&btf, Arch::host());
        assert!(
            r.missing.is_empty(),
            "fields missing on this kernel: {:?}",
            r.missing
        );
        let o = r.offsets;
        // Cross-check a few against facts of the layout.
        assert_eq!(
            o.cred_suid,
            o.cred_uid + 8,
            "uid, gid, suid are consecutive"
        );
        assert_eq!(
            o.cred_euid,
            o.cred_suid + 8,
            "suid, sgid, euid are consecutive"
        );
        assert_eq!(
            o.cred_fsuid,
            o.cred_euid + 8,
            "euid, egid, fsuid are consecutive"
        );
        assert_eq!(o.cred_gid, o.cred_uid + 4, "uid, gid");
        assert_eq!(o.cred_sgid, o.cred_suid + 4, "suid, sgid");
        assert_eq!(o.cred_egid, o.cred_euid + 4, "euid, egid");
        assert_eq!(o.cred_fsgid, o.cred_fsuid + 4, "fsuid, fsgid");
        assert!(o.cred_cap_ambient > o.cred_cap_permitted);
        if Arch::host() == Some(Arch::X86_64) {
            // pt_regs is the user register frame of the syscall ABI (arch/x86/include/asm/ptrace.h).
            assert_eq!(o.regs_args, [112, 104, 96, 56, 72, 64]);
            assert_eq!(o.compat_regs_args, [40, 88, 96, 104, 112, 32]);
            assert_eq!(
                o.task_ti_status, 16,
                "thread_info: flags, syscall_work, status"
            );
        }
    }

    #[test]
    fn host_cred_fields_do_not_overlap() {
        let Some(btf) = host() else { return };
        let o = resolve(&btf, Arch::host()).offsets;
        let mut cred = [
            (o.cred_uid, 4),
            (o.cred_suid, 4),
            (o.cred_euid, 4),
            (o.cred_fsuid, 4),
            (o.cred_gid, 4),
            (o.cred_sgid, 4),
            (o.cred_egid, 4),
            (o.cred_fsgid, 4),
            (o.cred_cap_permitted, 8),
            (o.cred_cap_ambient, 8),
        ];
        cred.sort();
        for w in cred.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "cred fields overlap: {cred:?}");
        }
    }

    #[test]
    fn missing_fields_are_named() {
        // A kernel whose cred lacks cap_ambient and whose kernfs_node uses __parent.
        let mut b = Builder::new();
        let int = b.int("unsigned int", 4);
        let u64t = b.int("long long unsigned int", 8);
        b.composite(
            false,
            "cred",
            40,
            &[
                ("usage", int, 0, 0),
                ("uid", int, 32, 0),
                ("suid", int, 96, 0),
                ("euid", int, 160, 0),
                ("fsuid", int, 224, 0),
                ("cap_permitted", u64t, 256, 0),
            ],
        );
        let p = b.ptr(int);
        b.composite(
            false,
            "kernfs_node",
            24,
            &[("__parent", p, 64, 0), ("id", u64t, 128, 0)],
        );
        let btf = KernelBtf::parse(&b.build()).unwrap();
        let r = resolve(&btf, None);
        assert_eq!(r.offsets.cred_euid, 20);
        assert!(r.offsets.present & OFF_CRED_EUID != 0);
        let amb = r.missing_of(OFF_CRED_CAP_AMBIENT);
        assert_eq!(amb.len(), 1);
        assert_eq!(amb[0].field, "cred.cap_ambient");
        assert!(
            amb[0].reason.contains("no member cap_ambient"),
            "{}",
            amb[0]
        );
        let task = r.missing_of(OFF_TASK_CRED);
        assert_eq!(
            task[0].reason,
            "struct task_struct is not in the kernel's BTF"
        );
        assert!(
            r.missing_of(OFF_REGS_ARGS)[0]
                .reason
                .contains("architecture")
        );
    }

    #[test]
    fn renamed_and_wrongly_sized_fields() {
        let mut b = Builder::new();
        let int = b.int("int", 4);
        let u64t = b.int("long long unsigned int", 8);
        let p = b.ptr(int);
        b.composite(false, "pid", 8, &[("level", u64t, 0, 0)]);
        b.composite(false, "css_set", 8, &[("dfl_cgrp", p, 0, 0)]);
        b.composite(false, "cgroup", 8, &[("kn", int, 0, 0)]);
        let btf = KernelBtf::parse(&b.build()).unwrap();
        let r = resolve(&btf, None);
        assert!(r.offsets.present & OFF_CSS_SET_DFL_CGRP != 0);
        let lvl = r.missing_of(OFF_PID_LEVEL);
        assert_eq!(lvl[0].reason, "has size 8, expected 4");
        let kn = r.missing_of(OFF_CGROUP_KN);
        assert_eq!(kn[0].field, "cgroup.kn");
        let parent = r.missing_of(OFF_KERNFS_NODE_PARENT);
        assert_eq!(parent[0].field, "kernfs_node.parent|__parent");
    }
}
