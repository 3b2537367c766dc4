//! Loading, attaching and pinning the kernel programs, and typed access to their maps.
//!
//! Pin layout (one directory per agent instance, `--bpffs`):
//!
//! ```text
//! <instance>/v<ABI_VERSION>/maps/<MAP>       every map; reused by the next agent start
//! <instance>/v<ABI_VERSION>/links/<program>  every attachment; keeps enforcing while no
//!                                            agent runs (restart, upgrade)
//! ```
//!
//! Without a pin directory (tests) nothing is pinned and everything detaches on drop.
//!
//! Runtime guards (see [`crate::guards`]): [`Datapath::probe_guard_tier`],
//! [`Datapath::attach_guards`], [`Datapath::detach_guards`], and the arming functions
//! [`Datapath::arm_cgroup`], [`Datapath::disarm_cgroup`], [`Datapath::arm_running_below`],
//! [`Datapath::armed_cgroups`]; [`Datapath::exemption`] reads a task's exemption (the
//! `EXEMPT` task storage map, see `enforcer-ebpf/src/guards/exempt.rs`).
//! [`Datapath::load`] resolves the kernel struct offsets the guard programs need from
//! `/sys/kernel/btf/vmlinux` and writes them into the object's read-only global
//! `GUARD_OFFSETS` before loading it.

use std::{
    collections::{BTreeSet, HashMap as StdHashMap},
    fs,
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
};

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, MapError, lpm_trie::Key},
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupDevice, CgroupSkb, CgroupSkbAttachType, CgroupSock,
        CgroupSockAddr, CgroupSysctl, Lsm, ProgramError,
        links::{FdLink, PinnedLink},
    },
};
use enforcer_common::{
    ABI_VERSION, ARM_AGENT, AffinityKey, AffinityValue, Backend, BackendKey, Config, CtKey,
    CtValue, Endpoint, ExemptTask, GuardConfig, IpInfo, IpKey, PolicyKey, PolicyValue,
    SYSCALL_RULES_MAX, SvcKey, SvcValue, SyscallRule,
};
use thiserror::Error;

use crate::guards::{
    self, EXEC_PROGRAM, EXEMPTION_PROGRAMS, GuardProgram, GuardSupport, LSM_PROBE_PROGRAM,
    ProgKind, ResolvedOffsets, Tier, TierProbe,
};

/// The compiled `enforcer-ebpf` object.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/enforcer.bpf.o"));

/// Names of the maps, as the kernel object defines them.
pub mod map_names {
    pub const CONFIG: &str = "CONFIG";
    pub const ENDPOINTS: &str = "ENDPOINTS";
    pub const IPCACHE: &str = "IPCACHE";
    pub const POLICY: &str = "POLICY";
    pub const CONNTRACK: &str = "CONNTRACK";
    pub const SERVICES: &str = "SERVICES";
    pub const BACKENDS: &str = "BACKENDS";
    pub const AFFINITY: &str = "AFFINITY";
    pub const REVNAT: &str = "REVNAT";
    pub const EVENTS: &str = "EVENTS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const ARMED: &str = "ARMED";
    pub const GUARD_CONFIG: &str = "GUARD_CONFIG";
    pub const SYSCALL_RULES: &str = "SYSCALL_RULES";
    pub const SYSCALL_RULES_COMPAT: &str = "SYSCALL_RULES_COMPAT";
    /// The attach root's verified cgroup level (written by the programs; not pinned:
    /// programs of a new load find it again at once).
    pub const ROOT_LEVEL: &str = "ROOT_LEVEL";
    /// Task local storage (BTF-defined, `.maps` section): exempt runtime tasks.
    pub const EXEMPT: &str = "EXEMPT";
    /// Maps that carry state across agent restarts, pinned when a pin directory is set.
    pub const PINNED: &[&str] = &[
        CONFIG,
        ENDPOINTS,
        IPCACHE,
        POLICY,
        CONNTRACK,
        SERVICES,
        BACKENDS,
        AFFINITY,
        REVNAT,
        EVENTS,
        COUNTERS,
        ARMED,
        GUARD_CONFIG,
        SYSCALL_RULES,
        SYSCALL_RULES_COMPAT,
        EXEMPT,
    ];
}

/// Name of the read-only global holding the kernel offsets (`KernelOffsets`).
pub const GUARD_OFFSETS_GLOBAL: &str = "GUARD_OFFSETS";

/// Network programs and where they attach.
pub const NET_SKB_PROGRAMS: &[(&str, CgroupSkbAttachType)] = &[
    ("net_ingress", CgroupSkbAttachType::Ingress),
    ("net_egress", CgroupSkbAttachType::Egress),
];
pub const NET_SOCK_PROGRAMS: &[&str] = &[
    "net_connect4",
    "net_connect6",
    "net_sendmsg4",
    "net_sendmsg6",
    "net_recvmsg4",
    "net_recvmsg6",
    "net_getpeername4",
    "net_getpeername6",
];

/// LSM programs and their hooks (every guard program of the LSM tier).
pub fn lsm_programs() -> impl Iterator<Item = (&'static str, &'static str)> {
    guards::LSM_PROGRAMS.iter().filter_map(|p| match p.kind {
        ProgKind::Lsm(hook) => Some((p.name, hook)),
        _ => None,
    })
}

#[derive(Debug, Error)]
pub enum BpfError {
    #[error(
        "the embedded eBPF object is empty: this binary was built with ENFORCER_SKIP_EBPF; \
         rebuild without it"
    )]
    NoObject,
    #[error("parsing the eBPF object: {0}")]
    Parse(String),
    #[error("loading the eBPF object: {0}")]
    Object(#[source] aya::EbpfError),
    #[error("program {program}: not in the eBPF object")]
    MissingProgram { program: String },
    #[error("map {map}: {source}")]
    Map {
        map: String,
        #[source]
        source: Box<MapError>,
    },
    #[error("program {program}: loading into the kernel: {source}")]
    Load {
        program: String,
        #[source]
        source: Box<ProgramError>,
    },
    #[error(
        "program {program}: attaching to {target}: {source}{}",
        attach_hint(source)
    )]
    Attach {
        program: String,
        target: String,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("program {program}: its attachment is not a bpf_link (kernel too old?): {message}")]
    Link { program: String, message: String },
    #[error("LSM hook {hook}: no program for this kernel: {reason}")]
    HookSignature { hook: String, reason: String },
    #[error("reading kernel BTF (/sys/kernel/btf/vmlinux): {0}")]
    Btf(#[source] aya::BtfError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pinning {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BpfError + '_ {
    move |source| BpfError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Raise RLIMIT_MEMLOCK for kernels that still charge BPF memory against it (< 5.11).
fn raise_memlock() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer; failure only matters on old kernels and
    // then shows up as a map creation error.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
}

/// The loaded kernel side.
/// What [`Datapath::arm_running_below`] did.
#[derive(Debug, Default)]
pub struct ArmScan {
    pub armed: Vec<PathBuf>,
    /// Containers in set-up, left to their own exec (scan again after the grace).
    pub deferred: Vec<PathBuf>,
}

pub struct Datapath {
    ebpf: Ebpf,
    /// `<instance>/v<ABI>` when pinning.
    pins: Option<PinLayout>,
    /// Attachments held by this process when not pinned.
    links: Vec<FdLink>,
    /// Guard attachments held by this process when not pinned (dropped by
    /// `detach_guards`), by program.
    guard_links: Vec<(&'static str, FdLink)>,
    raw_guard_links: Vec<(&'static str, OwnedFd)>,
    /// Guard programs attached (pinned or held).
    guards_attached: BTreeSet<&'static str>,
    /// Kernel struct offsets written into `GUARD_OFFSETS`.
    offsets: ResolvedOffsets,
    /// Per LSM hook: the program whose signature matches this kernel's BTF, or why none.
    lsm_variants: Vec<(&'static str, Result<&'static GuardProgram, String>)>,
}

/// What [`Datapath::attach_guards`] did.
#[derive(Clone, Debug)]
pub struct GuardsAttached {
    pub tier: Tier,
    /// `GUARD_*` bits this tier enforces on this kernel.
    pub available: u32,
    /// Per guard: how it is enforced, or why it is unavailable.
    pub support: Vec<GuardSupport>,
    /// Programs attached.
    pub programs: Vec<&'static str>,
    /// Whether container runtime tasks can be exempted (`guards::exemption_available`):
    /// false when the kernel offsets it needs are missing, in which case `kubectl exec`
    /// into pods with root-exec or dangerous-capabilities enforced fails with runc 1.4+.
    pub exemption: bool,
    /// LSM tier: guards whose LSM programs this kernel refused, each served by the fallback
    /// programs instead (or unavailable if the fallback has nothing for it), with why.
    pub fell_back: Vec<(u32, String)>,
    /// `GUARD_*` bits the fallback programs serve (all of `available` in the fallback tier).
    pub fallback_guards: u32,
}

impl GuardsAttached {
    /// The tier that enforces `guard` (None: unavailable).
    pub fn tier_of(&self, guard: u32) -> Option<Tier> {
        if self.available & guard == 0 {
            None
        } else if self.fallback_guards & guard != 0 {
            Some(Tier::Fallback)
        } else {
            Some(self.tier)
        }
    }
}

/// Where an instance's pins live, the one place that spells it out (load, restarts,
/// upgrades, uninstall, `enforcer status`):
///
/// ```text
/// <instance>/v<ABI_VERSION>/maps/<MAP>
/// <instance>/v<ABI_VERSION>/links/<program>
/// ```
#[derive(Clone, Debug)]
pub struct PinLayout {
    instance: PathBuf,
}

impl PinLayout {
    pub fn new(instance: &Path) -> Self {
        Self {
            instance: instance.to_path_buf(),
        }
    }

    pub fn instance(&self) -> &Path {
        &self.instance
    }

    /// This ABI version's directory.
    pub fn version_dir(&self) -> PathBuf {
        self.instance.join(Self::version_name(ABI_VERSION))
    }

    fn version_name(abi: u32) -> String {
        format!("v{abi}")
    }

    pub fn maps(&self) -> PathBuf {
        self.version_dir().join("maps")
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.maps().join(name)
    }

    pub fn links(&self) -> PathBuf {
        self.version_dir().join("links")
    }

    pub fn link(&self, program: &str) -> PathBuf {
        self.links().join(program)
    }

    /// The version directories present, this version's included: (name, path).
    fn versions(&self) -> Vec<(String, PathBuf)> {
        let Ok(dir) = fs::read_dir(&self.instance) else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let numbered = name
                    .strip_prefix('v')
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                numbered.then(|| (name, e.path()))
            })
            .collect()
    }
}

impl Datapath {
    /// Load the object and create (or, with a pin directory, reuse) its maps. No program is
    /// loaded into the kernel yet.
    pub fn load(instance_dir: Option<&Path>) -> Result<Self, BpfError> {
        if OBJECT.is_empty() {
            return Err(BpfError::NoObject);
        }
        raise_memlock();
        let pins = instance_dir.map(PinLayout::new);
        let mut loader = EbpfLoader::new();
        // aya 0.14 creates the task storage map `EXEMPT` (from its BTF definition) but has
        // no typed wrapper for it: without this the load fails with "unsupported map".
        loader.allow_unsupported_maps();
        let mut paths = StdHashMap::new();
        if let Some(pins) = &pins {
            let maps = pins.maps();
            fs::create_dir_all(&maps).map_err(io_err(&maps))?;
            let links = pins.links();
            fs::create_dir_all(&links).map_err(io_err(&links))?;
            for name in map_names::PINNED {
                paths.insert(*name, pins.map(name));
            }
        }
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let kbtf = guards::btf::KernelBtf::from_sys_fs();
        let offsets = match &kbtf {
            Ok(b) => guards::offsets::resolve(b, guards::offsets::Arch::host()),
            Err(e) => ResolvedOffsets::unresolved(&e.to_string()),
        };
        let lsm_variants = guards::lsm_hooks()
            .into_iter()
            .map(|hook| {
                let variant = match &kbtf {
                    Ok(b) => {
                        let params = b.func_params(&format!("bpf_lsm_{hook}"));
                        guards::lsm_variant(hook, params.as_deref())
                    }
                    Err(e) => Err(format!("no kernel BTF: {e}")),
                };
                (hook, variant)
            })
            .collect();
        drop(kbtf);
        loader.override_global(GUARD_OFFSETS_GLOBAL, &offsets.offsets, true);
        let ebpf = loader.load(OBJECT).map_err(BpfError::Object)?;
        Ok(Self {
            ebpf,
            pins,
            links: Vec::new(),
            guard_links: Vec::new(),
            raw_guard_links: Vec::new(),
            guards_attached: BTreeSet::new(),
            offsets,
            lsm_variants,
        })
    }

    /// Kernel struct offsets as resolved at load, with what was missing.
    pub fn guard_offsets(&self) -> &ResolvedOffsets {
        &self.offsets
    }

    pub fn pins(&self) -> Option<&PinLayout> {
        self.pins.as_ref()
    }

    fn keep(&mut self, program: &str, link: FdLink) -> Result<(), BpfError> {
        match &self.pins {
            Some(pins) => {
                let path = pins.link(program);
                // A link pinned by a previous agent keeps enforcing until we replace it.
                if path.exists() {
                    let _ = fs::remove_file(&path);
                }
                link.pin(&path)
                    .map_err(|source| BpfError::Pin { path, source })?;
            }
            None => self.links.push(link),
        }
        Ok(())
    }

    /// Load the network programs and attach them to the cgroup at `cgroup` (the root of
    /// the pods' subtree). Attachments are bpf_links, which the kernel always treats as
    /// multi-attach (other programs on that cgroup keep running) and which take no attach
    /// flags: hence `CgroupAttachMode::Single` (flags 0) below.
    pub fn attach_network(&mut self, cgroup: &Path) -> Result<(), BpfError> {
        let cg = fs::File::open(cgroup).map_err(io_err(cgroup))?;
        let target = cgroup.display().to_string();
        // All or nothing: every program is attached before any is pinned. If one fails,
        // the links made so far close with this function (a bpf_link detaches when its
        // last descriptor goes), and what a previous agent pinned is left as it was.
        let mut attached: Vec<(&str, FdLink)> = Vec::new();
        for (name, attach_type) in NET_SKB_PROGRAMS {
            let prog: &mut CgroupSkb = self.program(name)?;
            prog.load().map_err(|source| load_err(name, source))?;
            let id = prog
                .attach(cg.as_fd(), *attach_type, CgroupAttachMode::Single)
                .map_err(|source| attach_err(name, &target, source))?;
            let link = prog
                .take_link(id)
                .map_err(|source| attach_err(name, &target, source))?;
            attached.push((name, fd_link(name, link)?));
        }
        for name in NET_SOCK_PROGRAMS {
            let prog: &mut CgroupSockAddr = self.program(name)?;
            prog.load().map_err(|source| load_err(name, source))?;
            let id = prog
                .attach(cg.as_fd(), CgroupAttachMode::Single)
                .map_err(|source| attach_err(name, &target, source))?;
            let link = prog
                .take_link(id)
                .map_err(|source| attach_err(name, &target, source))?;
            attached.push((name, fd_link(name, link)?));
        }
        for (name, link) in attached {
            self.keep(name, link)?;
        }
        Ok(())
    }

    /// Load and attach LSM guard programs (the variant of each hook that matches this
    /// kernel; all hooks when `only` is empty, else the named programs' hooks), and the
    /// exec tracepoint that arms cgroups (no guard applies to an unarmed cgroup).
    pub fn attach_lsm(&mut self, only: &[&str]) -> Result<(), BpfError> {
        let btf = Btf::from_sys_fs().map_err(BpfError::Btf)?;
        for p in EXEMPTION_PROGRAMS {
            self.attach_guard_program(p, None, &btf)?;
        }
        self.attach_guard_program(&EXEC_PROGRAM, None, &btf)?;
        for (hook, variant) in self.lsm_variants.clone() {
            let wanted = only.is_empty()
                || guards::LSM_PROGRAMS
                    .iter()
                    .any(|p| only.contains(&p.name) && p.kind == ProgKind::Lsm(hook));
            if !wanted {
                continue;
            }
            let p = variant.map_err(|reason| BpfError::HookSignature {
                hook: hook.into(),
                reason,
            })?;
            self.attach_guard_program(p, None, &btf)?;
        }
        Ok(())
    }

    /// Load (without attaching) the LSM program of every hook, as `attach_guards` would:
    /// the guards of each hook this kernel refuses (no program for its signature, or the
    /// verifier said no), with why. For `enforcer status`.
    pub fn check_lsm_programs(&mut self) -> Vec<(u32, String)> {
        let btf = match Btf::from_sys_fs() {
            Ok(b) => b,
            Err(e) => return vec![(enforcer_common::GUARD_ALL, format!("no kernel BTF: {e}"))],
        };
        let mut refused = Vec::new();
        for (hook, variant) in self.lsm_variants.clone() {
            let guards_of_hook = guards::lsm_hook_guards(hook);
            let result = variant.and_then(|p| {
                let prog: &mut Lsm = self.program(p.name).map_err(|e| e.to_string())?;
                if prog.fd().is_ok() {
                    return Ok(());
                }
                prog.load(hook, &btf)
                    .map_err(|e| describe_lsm_load_error(&format!("lsm/{hook}"), &e))
            });
            if let Err(reason) = result {
                refused.push((guards_of_hook, format!("lsm/{hook}: {reason}")));
            }
        }
        refused
    }

    /// Treat `hook` as refused by this kernel (its guards fall back when attached in the
    /// LSM tier). Tests use it to exercise the per-guard fallback on a kernel that accepts
    /// every hook.
    #[doc(hidden)]
    pub fn refuse_lsm_hook(&mut self, hook: &str, why: &str) {
        for (h, v) in self.lsm_variants.iter_mut() {
            if *h == hook {
                *v = Err(why.to_string());
            }
        }
    }

    /// The LSM program chosen for `hook` on this kernel, or why there is none.
    pub fn lsm_variant(&self, hook: &str) -> Result<&'static GuardProgram, String> {
        self.lsm_variants
            .iter()
            .find(|(h, _)| *h == hook)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| Err(format!("no LSM program for hook {hook}")))
    }

    /// Keep a guard program's link (pinned, or held until `detach_guards`).
    fn keep_guard(&mut self, program: &'static str, link: FdLink) -> Result<(), BpfError> {
        match &self.pins {
            Some(_) => self.keep(program, link)?,
            None => self.guard_links.push((program, link)),
        }
        self.guards_attached.insert(program);
        Ok(())
    }

    /// Keep a bpf_link created without aya (pinned, or held until `detach_guards`).
    fn keep_raw_guard(&mut self, program: &'static str, fd: OwnedFd) -> Result<(), BpfError> {
        match &self.pins {
            Some(pins) => {
                let path = pins.link(program);
                if path.exists() {
                    let _ = fs::remove_file(&path);
                }
                raw_link::pin(fd.as_fd(), &path).map_err(|source| BpfError::Io {
                    path: path.clone(),
                    source,
                })?;
            }
            None => self.raw_guard_links.push((program, fd)),
        }
        self.guards_attached.insert(program);
        Ok(())
    }

    /// Load and attach one guard program; `cgroup` for cgroup programs. Idempotent.
    fn attach_guard_program(
        &mut self,
        p: &GuardProgram,
        cgroup: Option<&Path>,
        btf: &Btf,
    ) -> Result<(), BpfError> {
        if self.guards_attached.contains(p.name) {
            return Ok(());
        }
        let name = p.name;
        let link = match p.kind {
            ProgKind::Lsm(hook) => {
                let prog: &mut Lsm = self.program(name)?;
                if prog.fd().is_err() {
                    prog.load(hook, btf).map_err(|e| load_err(name, e))?;
                }
                let id = prog.attach().map_err(|e| attach_err(name, hook, e))?;
                let link = prog.take_link(id).map_err(|e| attach_err(name, hook, e))?;
                fd_link(name, link)?
            }
            ProgKind::Tracepoint(tp) => {
                let prog: &mut BtfTracePoint = self.program(name)?;
                if prog.fd().is_err() {
                    prog.load(tp, btf).map_err(|e| load_err(name, e))?;
                }
                let id = prog.attach().map_err(|e| attach_err(name, tp, e))?;
                let link = prog.take_link(id).map_err(|e| attach_err(name, tp, e))?;
                fd_link(name, link)?
            }
            ProgKind::CgroupSockCreate => {
                let path = cgroup.expect("cgroup programs need a cgroup");
                let cg = fs::File::open(path).map_err(io_err(path))?;
                let target = path.display().to_string();
                let prog: &mut CgroupSock = self.program(name)?;
                if prog.fd().is_err() {
                    prog.load().map_err(|e| load_err(name, e))?;
                }
                let id = prog
                    .attach(cg.as_fd(), CgroupAttachMode::Single)
                    .map_err(|e| attach_err(name, &target, e))?;
                let link = prog
                    .take_link(id)
                    .map_err(|e| attach_err(name, &target, e))?;
                fd_link(name, link)?
            }
            ProgKind::CgroupDevice | ProgKind::CgroupSysctl => {
                // aya 0.14 cannot turn these links into `FdLink`s (to pin them): create the
                // bpf_link directly.
                let path = cgroup.expect("cgroup programs need a cgroup");
                let cg = fs::File::open(path).map_err(io_err(path))?;
                let target = path.display().to_string();
                let attach_type = if p.kind == ProgKind::CgroupDevice {
                    let prog: &mut CgroupDevice = self.program(name)?;
                    if prog.fd().is_err() {
                        prog.load().map_err(|e| load_err(name, e))?;
                    }
                    BPF_CGROUP_DEVICE
                } else {
                    let prog: &mut CgroupSysctl = self.program(name)?;
                    if prog.fd().is_err() {
                        prog.load().map_err(|e| load_err(name, e))?;
                    }
                    BPF_CGROUP_SYSCTL
                };
                let prog = self
                    .ebpf
                    .program(name)
                    .ok_or_else(|| BpfError::MissingProgram {
                        program: name.into(),
                    })?;
                let prog_fd = prog.fd().map_err(|e| load_err(name, e))?;
                let fd = raw_link::cgroup_link_create(prog_fd.as_fd(), cg.as_fd(), attach_type)
                    .map_err(|source| BpfError::Attach {
                        program: name.into(),
                        target: target.clone(),
                        source: Box::new(ProgramError::SyscallError(aya::sys::SyscallError {
                            call: "bpf_link_create",
                            io_error: source,
                        })),
                    })?;
                return self.keep_raw_guard(name, fd);
            }
        };
        self.keep_guard(name, link)
    }

    /// Decide the guard tier by trying: load the pass-through LSM program
    /// `guard_lsm_probe` and attach it (then detach it). `Lsm` if both work, `Fallback`
    /// otherwise, with what the kernel answered.
    pub fn probe_guard_tier(&mut self) -> TierProbe {
        let p = LSM_PROBE_PROGRAM;
        let ProgKind::Lsm(hook) = p.kind else {
            unreachable!("the probe is an LSM program")
        };
        let section = format!("lsm/{hook}");
        let fallback = |reason: String| TierProbe {
            tier: Tier::Fallback,
            reason,
        };
        let btf = match Btf::from_sys_fs() {
            Ok(b) => b,
            Err(e) => return fallback(format!("no kernel BTF (/sys/kernel/btf/vmlinux): {e}")),
        };
        let prog: &mut Lsm = match self.program(p.name) {
            Ok(p) => p,
            Err(e) => return fallback(e.to_string()),
        };
        if prog.fd().is_err()
            && let Err(e) = prog.load(hook, &btf)
        {
            return fallback(describe_lsm_load_error(&section, &e));
        }
        let result = match prog.attach() {
            Ok(id) => {
                let _ = prog.detach(id);
                TierProbe {
                    tier: Tier::Lsm,
                    reason: format!(
                        "{section} loaded and attached ({})",
                        active_lsms().map_or_else(|e| e, |l| format!("active LSMs: {l}"))
                    ),
                }
            }
            Err(e) => fallback(format!("attaching {section} failed: {}", error_chain(&e))),
        };
        let _ = prog.unload();
        result
    }

    /// Attach the guard programs of `tier`: the exemption tracepoints (fork, cgroup
    /// migration) and the exec tracepoint (arming), the cgroup programs at `cgroup` (the
    /// pods' cgroup root, the same as the network programs), and the tier's LSM or fallback
    /// programs; write `GUARD_CONFIG` and, for the fallback, the syscall rules. Programs
    /// whose every guard is unavailable on this kernel (kernel offsets missing) are not
    /// attached; the result says which guards are enforced and why the others are not.
    ///
    /// In the LSM tier each hook's program is the variant written for this kernel's
    /// signature of the hook (from its BTF), and a hook the kernel refuses (no matching
    /// variant, verifier or attach error) costs only the guards that hook serves: they fall
    /// back to the fallback programs, alone, and `fell_back` says why. Idempotent.
    pub fn attach_guards(&mut self, cgroup: &Path, tier: Tier) -> Result<GuardsAttached, BpfError> {
        let btf = Btf::from_sys_fs().map_err(BpfError::Btf)?;
        let mut support = guards::support(tier, &self.offsets);
        let mut available = guards::available(tier, &self.offsets);
        let fallback_available = guards::available(Tier::Fallback, &self.offsets);
        // The exemption programs first, so that no runtime task enters a pod unmarked
        // while guard programs are already attached.
        for p in EXEMPTION_PROGRAMS {
            self.attach_guard_program(p, None, &btf)?;
        }
        self.attach_guard_program(&EXEC_PROGRAM, None, &btf)?;
        for p in guards::SHARED_PROGRAMS {
            if p.guards & available != 0 {
                self.attach_guard_program(p, Some(cgroup), &btf)?;
            }
        }
        let mut fell_back: Vec<(u32, String)> = Vec::new();
        let fallback_guards = match tier {
            Tier::Fallback => available,
            Tier::Lsm => {
                let mut refused = 0u32;
                for (hook, variant) in self.lsm_variants.clone() {
                    let guards_of_hook = guards::lsm_hook_guards(hook);
                    if guards_of_hook & available == 0 {
                        continue;
                    }
                    let result = match variant {
                        Ok(p) => self
                            .attach_guard_program(p, None, &btf)
                            .map_err(|e| error_chain(&e)),
                        Err(reason) => Err(reason),
                    };
                    if let Err(reason) = result {
                        refused |= guards_of_hook & available;
                        fell_back
                            .push((guards_of_hook & available, format!("lsm/{hook}: {reason}")));
                    }
                }
                refused & fallback_available
            }
        };
        if tier == Tier::Lsm {
            // Guards refused in the LSM tier: enforced as the fallback tier does, or not at
            // all if the fallback has nothing for them here.
            let fallback_support = guards::support(Tier::Fallback, &self.offsets);
            for s in support.iter_mut() {
                let Some((_, why)) = fell_back.iter().find(|(g, _)| g & s.guard != 0) else {
                    continue;
                };
                let fb = fallback_support
                    .iter()
                    .find(|f| f.guard == s.guard)
                    .cloned()
                    .expect("every guard has a fallback entry");
                if fallback_guards & s.guard != 0 {
                    *s = fb;
                } else {
                    s.enforcement = guards::Enforcement::Unavailable;
                    available &= !s.guard;
                }
                s.refused = Some(why.clone());
            }
        }
        self.set_guard_config(&GuardConfig {
            tier: tier.code() as u32,
            fallback_guards,
        })?;
        self.write_syscall_rules(fallback_guards)?;
        if fallback_guards != 0 {
            for p in guards::FALLBACK_PROGRAMS {
                if p.guards & fallback_guards != 0 {
                    self.attach_guard_program(p, Some(cgroup), &btf)?;
                }
            }
        }
        Ok(GuardsAttached {
            tier,
            available,
            support,
            programs: self.guards_attached.iter().copied().collect(),
            exemption: guards::exemption_available(&self.offsets),
            fell_back,
            fallback_guards,
        })
    }

    /// Hand `guards` over to the fallback programs (the LSM tier's programs for them did
    /// not prove to work, see the agent's self-test): their syscall rules are written, the
    /// fallback programs they need are attached. Returns the guards the fallback tier took
    /// (those it can serve on this kernel).
    pub fn demote_to_fallback(&mut self, cgroup: &Path, guards: u32) -> Result<u32, BpfError> {
        let btf = Btf::from_sys_fs().map_err(BpfError::Btf)?;
        let took = guards & guards::available(Tier::Fallback, &self.offsets);
        let mut gc = self.guard_config()?;
        gc.fallback_guards |= took;
        self.set_guard_config(&gc)?;
        self.write_syscall_rules(gc.fallback_guards)?;
        for p in guards::FALLBACK_PROGRAMS {
            if p.guards & gc.fallback_guards != 0 {
                self.attach_guard_program(p, Some(cgroup), &btf)?;
            }
        }
        Ok(took)
    }

    /// The guard settings (`GUARD_CONFIG`).
    pub fn guard_config(&mut self) -> Result<GuardConfig, BpfError> {
        let map = self.map_mut(map_names::GUARD_CONFIG)?;
        let arr: Array<&mut MapData, GuardConfig> =
            Array::try_from(map).map_err(map_err(map_names::GUARD_CONFIG))?;
        arr.get(&0, 0).map_err(map_err(map_names::GUARD_CONFIG))
    }

    /// For tests: make the fallback tier stop enforcing `guards` while every report still
    /// says they are enforced (their syscall rules are dropped), as a broken kernel or a
    /// bug would. The agent's self-test must notice.
    #[doc(hidden)]
    pub fn break_fallback_guards(&mut self, guards: u32) -> Result<(), BpfError> {
        let gc = self.guard_config()?;
        self.write_syscall_rules(gc.fallback_guards & !guards)
    }

    /// Detach one guard program this process attached (and unpin it). Returns whether it
    /// was attached. For measurements and tests: guards stay consistent only with the
    /// whole set attached.
    pub fn detach_guard_program(&mut self, program: &str) -> Result<bool, BpfError> {
        let Some(name) = self.guards_attached.iter().copied().find(|n| *n == program) else {
            return Ok(false);
        };
        self.guard_links.retain(|(n, _)| *n != name);
        self.raw_guard_links.retain(|(n, _)| *n != name);
        if let Some(pins) = &self.pins
            && let Ok(link) = PinnedLink::from_pin(pins.link(name))
        {
            let _ = link.unpin();
        }
        self.guards_attached.remove(name);
        Ok(true)
    }

    /// Detach every guard program this process attached (and unpin pinned ones). The
    /// `ARMED` map keeps its entries.
    pub fn detach_guards(&mut self) -> Result<(), BpfError> {
        self.guard_links.clear();
        self.raw_guard_links.clear();
        if let Some(pins) = &self.pins {
            for name in &self.guards_attached {
                let path = pins.link(name);
                if let Ok(link) = PinnedLink::from_pin(&path) {
                    let _ = link.unpin();
                }
            }
        }
        self.guards_attached.clear();
        self.set_guard_config(&GuardConfig::default())?;
        self.write_syscall_rules(0)
    }

    fn set_guard_config(&mut self, gc: &GuardConfig) -> Result<(), BpfError> {
        let map = self.map_mut(map_names::GUARD_CONFIG)?;
        let mut arr: Array<&mut MapData, GuardConfig> =
            Array::try_from(map).map_err(map_err(map_names::GUARD_CONFIG))?;
        arr.set(0, gc, 0).map_err(map_err(map_names::GUARD_CONFIG))
    }

    /// Fill `SYSCALL_RULES` (and the compat table) for this architecture, keeping only
    /// the guards in `available` (the ones the fallback programs serve).
    fn write_syscall_rules(&mut self, available: u32) -> Result<(), BpfError> {
        for (name, table) in [
            (map_names::SYSCALL_RULES, guards::syscalls::native()),
            (map_names::SYSCALL_RULES_COMPAT, guards::syscalls::compat()),
        ] {
            let map = self.map_mut(name)?;
            let mut arr: Array<&mut MapData, SyscallRule> =
                Array::try_from(map).map_err(map_err(name))?;
            for i in 0..SYSCALL_RULES_MAX {
                arr.set(i, SyscallRule::default(), 0)
                    .map_err(map_err(name))?;
            }
            for (nr, mut rule) in table {
                rule.guards &= available;
                if rule.guards != 0 {
                    arr.set(nr, rule, 0).map_err(map_err(name))?;
                }
            }
        }
        Ok(())
    }

    /// The `ARMED` map (cgroup id -> `ARM_*` bits).
    pub fn armed(&mut self) -> Result<HashMap<&mut MapData, u64, u32>, BpfError> {
        let map = self.map_mut(map_names::ARMED)?;
        HashMap::try_from(map).map_err(map_err(map_names::ARMED))
    }

    /// Arm a cgroup (by id): guards apply to its tasks from now on. For containers that
    /// were running before the guard programs were attached (they exec'd long ago).
    pub fn arm_cgroup(&mut self, cgroup_id: u64) -> Result<(), BpfError> {
        let mut armed = self.armed()?;
        let bits = armed.get(&cgroup_id, 0).unwrap_or(0) | ARM_AGENT;
        armed
            .insert(cgroup_id, bits, 0)
            .map_err(map_err(map_names::ARMED))
    }

    /// Forget a cgroup (deleted). Returns whether it was armed.
    pub fn disarm_cgroup(&mut self, cgroup_id: u64) -> Result<bool, BpfError> {
        let mut armed = self.armed()?;
        match armed.remove(&cgroup_id) {
            Ok(()) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(map_err(map_names::ARMED)(e)),
        }
    }

    /// Armed cgroups and how they were armed.
    pub fn armed_cgroups(&mut self) -> Result<Vec<(u64, u32)>, BpfError> {
        let armed = self.armed()?;
        armed
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err(map_names::ARMED))
    }

    /// The exemption of the process `pid` (its thread-group leader), if it has one: the
    /// `EXEMPT` task storage map, looked up with a pidfd as the key (the kernel's interface
    /// to task storage from user space: a pidfd names a task, not a reusable number).
    /// `Ok(None)` if the task has no mark; an error if it does not exist.
    pub fn exemption(&mut self, pid: u32) -> Result<Option<ExemptTask>, BpfError> {
        let map = self
            .ebpf
            .map(map_names::EXEMPT)
            .ok_or_else(|| BpfError::Map {
                map: map_names::EXEMPT.into(),
                source: Box::new(MapError::InvalidName {
                    name: map_names::EXEMPT.into(),
                }),
            })?;
        let aya::maps::Map::Unsupported(data) = map else {
            unreachable!("aya 0.14 has no type for task storage maps")
        };
        let path = PathBuf::from(format!("/proc/{pid}"));
        let pidfd = raw_link::pidfd_open(pid).map_err(io_err(&path))?;
        raw_link::task_storage_lookup(data.fd().as_fd(), pidfd.as_fd()).map_err(|io_error| {
            BpfError::Map {
                map: map_names::EXEMPT.into(),
                source: Box::new(MapError::SyscallError(aya::sys::SyscallError {
                    call: "bpf_map_lookup_elem",
                    io_error,
                })),
            }
        })
    }

    /// Arm every populated cgroup below `root` (not `root` itself) except containers a
    /// runtime is still setting up (`guards::arming`, judged with `grace`): for the
    /// agent's start-up, when containers were started before the exec tracepoint was
    /// attached. Returns the cgroups armed and those deferred (in set-up), which the
    /// caller scans again once `grace` has passed.
    pub fn arm_running_below(
        &mut self,
        root: &Path,
        grace: std::time::Duration,
    ) -> Result<ArmScan, BpfError> {
        let mut scan = ArmScan::default();
        for p in crate::guards::arming::populated_below(root, grace) {
            if p.in_setup {
                scan.deferred.push(p.path);
                continue;
            }
            let Ok(id) = crate::cgroup::cgroup_id(&p.path) else {
                continue;
            };
            self.arm_cgroup(id)?;
            scan.armed.push(p.path);
        }
        Ok(scan)
    }

    fn program<'a, T>(&'a mut self, name: &str) -> Result<&'a mut T, BpfError>
    where
        &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
    {
        let prog = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| BpfError::MissingProgram {
                program: name.into(),
            })?;
        prog.try_into().map_err(|source| load_err(name, source))
    }

    fn map_mut(&mut self, name: &str) -> Result<&mut aya::maps::Map, BpfError> {
        self.ebpf.map_mut(name).ok_or_else(|| BpfError::Map {
            map: name.into(),
            source: Box::new(MapError::InvalidName { name: name.into() }),
        })
    }

    pub fn set_config(&mut self, cfg: &Config) -> Result<(), BpfError> {
        let map = self.map_mut(map_names::CONFIG)?;
        let mut arr: Array<&mut MapData, Config> =
            Array::try_from(map).map_err(map_err(map_names::CONFIG))?;
        arr.set(0, cfg, 0).map_err(map_err(map_names::CONFIG))
    }

    pub fn config(&mut self) -> Result<Config, BpfError> {
        let map = self.map_mut(map_names::CONFIG)?;
        let arr: Array<&mut MapData, Config> =
            Array::try_from(map).map_err(map_err(map_names::CONFIG))?;
        arr.get(&0, 0).map_err(map_err(map_names::CONFIG))
    }

    pub fn endpoints(&mut self) -> Result<HashMap<&mut MapData, u64, Endpoint>, BpfError> {
        let map = self.map_mut(map_names::ENDPOINTS)?;
        HashMap::try_from(map).map_err(map_err(map_names::ENDPOINTS))
    }

    pub fn ipcache(&mut self) -> Result<LpmTrie<&mut MapData, IpKey, IpInfo>, BpfError> {
        let map = self.map_mut(map_names::IPCACHE)?;
        LpmTrie::try_from(map).map_err(map_err(map_names::IPCACHE))
    }

    pub fn policy(&mut self) -> Result<LpmTrie<&mut MapData, PolicyKey, PolicyValue>, BpfError> {
        let map = self.map_mut(map_names::POLICY)?;
        LpmTrie::try_from(map).map_err(map_err(map_names::POLICY))
    }

    pub fn conntrack(&mut self) -> Result<HashMap<&mut MapData, CtKey, CtValue>, BpfError> {
        let map = self.map_mut(map_names::CONNTRACK)?;
        HashMap::try_from(map).map_err(map_err(map_names::CONNTRACK))
    }

    pub fn services(&mut self) -> Result<HashMap<&mut MapData, SvcKey, SvcValue>, BpfError> {
        let map = self.map_mut(map_names::SERVICES)?;
        HashMap::try_from(map).map_err(map_err(map_names::SERVICES))
    }

    pub fn backends(&mut self) -> Result<HashMap<&mut MapData, BackendKey, Backend>, BpfError> {
        let map = self.map_mut(map_names::BACKENDS)?;
        HashMap::try_from(map).map_err(map_err(map_names::BACKENDS))
    }

    pub fn affinity(
        &mut self,
    ) -> Result<HashMap<&mut MapData, AffinityKey, AffinityValue>, BpfError> {
        let map = self.map_mut(map_names::AFFINITY)?;
        HashMap::try_from(map).map_err(map_err(map_names::AFFINITY))
    }

    /// Take the events ring buffer (for the event reader task).
    pub fn take_events(&mut self) -> Result<aya::maps::RingBuf<aya::maps::MapData>, BpfError> {
        let map = self
            .ebpf
            .take_map(map_names::EVENTS)
            .ok_or_else(|| BpfError::Map {
                map: map_names::EVENTS.into(),
                source: Box::new(MapError::InvalidName {
                    name: map_names::EVENTS.into(),
                }),
            })?;
        aya::maps::RingBuf::try_from(map).map_err(map_err(map_names::EVENTS))
    }

    /// How often a loaded program ran and for how long in total (the kernel counts only
    /// while `kernel.bpf_stats_enabled` is 1).
    pub fn program_run_stats(&self, program: &str) -> Result<(u64, std::time::Duration), BpfError> {
        let prog = self
            .ebpf
            .program(program)
            .ok_or_else(|| BpfError::MissingProgram {
                program: program.into(),
            })?;
        let info = prog.info().map_err(|e| load_err(program, e))?;
        Ok((info.run_count(), info.run_time()))
    }

    /// Sum of a per-CPU counter (`CNT_*`).
    pub fn counter(&mut self, idx: u32) -> Result<u64, BpfError> {
        let map = self.map_mut(map_names::COUNTERS)?;
        let arr: aya::maps::PerCpuArray<&mut MapData, u64> =
            aya::maps::PerCpuArray::try_from(map).map_err(map_err(map_names::COUNTERS))?;
        let v = arr.get(&idx, 0).map_err(map_err(map_names::COUNTERS))?;
        Ok(v.iter().sum())
    }

    /// The level of the attach root `root_cgroup_id` as the programs verified it against
    /// the kernel's cgroup ancestry (`ROOT_LEVEL`), once a program has seen a cgroup below
    /// it. It differs from `Config::root_level` when the agent's cgroupfs is a nested
    /// cgroup namespace (kind).
    pub fn verified_root_level(&mut self, root_cgroup_id: u64) -> Result<Option<u32>, BpfError> {
        let map = self.map_mut(map_names::ROOT_LEVEL)?;
        let arr: aya::maps::Array<&mut MapData, u64> =
            aya::maps::Array::try_from(map).map_err(map_err(map_names::ROOT_LEVEL))?;
        let v = arr.get(&0, 0).map_err(map_err(map_names::ROOT_LEVEL))?;
        const SHIFT: u32 = 56;
        let mask = (1u64 << SHIFT) - 1;
        Ok((v != 0 && v & mask == root_cgroup_id & mask).then_some((v >> SHIFT) as u32))
    }

    /// Sizes of every map's key and value as the object defines them, by map name.
    pub fn object_map_layouts() -> Result<Vec<(String, u32, u32)>, BpfError> {
        if OBJECT.is_empty() {
            return Err(BpfError::NoObject);
        }
        let obj = aya_obj_parse(OBJECT)?;
        Ok(obj)
    }
}

fn aya_obj_parse(bytes: &[u8]) -> Result<Vec<(String, u32, u32)>, BpfError> {
    let obj = aya_obj::Object::parse(bytes).map_err(|e| BpfError::Parse(e.to_string()))?;
    Ok(obj
        .maps
        .iter()
        .map(|(name, m)| (name.clone(), m.key_size(), m.value_size()))
        .collect())
}

/// Links are kept as `FdLink`s (bpf_link based, kernel >= 5.7) so they can be pinned.
fn fd_link<L>(program: &str, link: L) -> Result<FdLink, BpfError>
where
    FdLink: TryFrom<L>,
    <FdLink as TryFrom<L>>::Error: std::fmt::Display,
{
    FdLink::try_from(link).map_err(|e| BpfError::Link {
        program: program.into(),
        message: e.to_string(),
    })
}

/// The BPF LSM's state as /sys/kernel/security/lsm shows it.
fn active_lsms() -> Result<String, String> {
    fs::read_to_string("/sys/kernel/security/lsm")
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("/sys/kernel/security/lsm unreadable ({e}): securityfs not mounted?"))
}

/// A readable reason for an LSM program that did not load.
fn describe_lsm_load_error(section: &str, e: &ProgramError) -> String {
    if let ProgramError::LoadError { io_error, .. } = e {
        let errno = io_error.raw_os_error().unwrap_or(0);
        let name = match errno {
            libc::EPERM => "EPERM",
            libc::EINVAL => "EINVAL",
            524 => "ENOTSUPP",
            libc::ESRCH => "ESRCH",
            _ => "",
        };
        let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
        let lsm_param = cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix("lsm="))
            .map(|v| format!("lsm={v}"))
            .unwrap_or_else(|| "no lsm= parameter, the kernel's built-in list applies".into());
        let why = match active_lsms() {
            Ok(l) if l.split(',').any(|x| x == "bpf") => {
                format!("the BPF LSM is active ({l}) but refused the program")
            }
            Ok(l) => format!("BPF LSM not active (lsm= lacks bpf; active: {l})"),
            Err(e) if errno == libc::EPERM => format!(
                "BPF LSM not active (EPERM before verification is what kernels without bpf \
                 among their active LSMs answer; {e}; kernel command line: {lsm_param})"
            ),
            Err(e) => format!("BPF LSM state unknown: {e}; kernel command line: {lsm_param}"),
        };
        return format!("BPF_PROG_LOAD for {section} returned {name} ({io_error}): {why}");
    }
    format!("loading {section} failed: {}", error_chain(e))
}

/// An error and its sources, `: `-separated.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn load_err(program: &str, source: ProgramError) -> BpfError {
    BpfError::Load {
        program: program.into(),
        source: Box::new(source),
    }
}

/// What an attach error means when the kernel's answer alone does not say it.
fn attach_hint(source: &ProgramError) -> &'static str {
    let errno = match source {
        ProgramError::SyscallError(e) => e.io_error.raw_os_error(),
        _ => None,
    };
    match errno {
        Some(libc::EPERM) => {
            " (EPERM: a cgroup above it has a program of this attach type attached without \
             BPF_F_ALLOW_MULTI, which forbids attaching any below it: another agent or tool \
             attached there, see `bpftool cgroup tree`; or the agent lacks CAP_BPF and \
             CAP_NET_ADMIN)"
        }
        _ => "",
    }
}

fn attach_err(program: &str, target: &str, source: ProgramError) -> BpfError {
    BpfError::Attach {
        program: program.into(),
        target: target.into(),
        source: Box::new(source),
    }
}

fn map_err(map: &str) -> impl FnOnce(MapError) -> BpfError + '_ {
    move |source| BpfError::Map {
        map: map.into(),
        source: Box::new(source),
    }
}

/// Detach everything an instance pinned and remove its pins.
pub fn uninstall(instance_dir: &Path) -> Result<usize, BpfError> {
    if !instance_dir.exists() {
        return Ok(0);
    }
    let mut removed = 0;
    for (_, dir) in PinLayout::new(instance_dir).versions() {
        removed += remove_version(&dir)?;
    }
    let _ = fs::remove_dir(instance_dir);
    Ok(removed)
}

/// After an upgrade: detach and remove what agents of other ABI versions pinned in
/// `instance_dir` (their programs would otherwise stay attached beside ours, enforcing
/// their frozen maps). Called once this version's programs are attached, so that the
/// node is never without enforcement. Returns (version directory, objects removed).
pub fn remove_other_versions(instance_dir: &Path) -> Result<Vec<(String, usize)>, BpfError> {
    let layout = PinLayout::new(instance_dir);
    let ours = PinLayout::version_name(ABI_VERSION);
    let mut out = Vec::new();
    for (name, dir) in layout.versions() {
        if name != ours {
            out.push((name, remove_version(&dir)?));
        }
    }
    Ok(out)
}

/// Unpins the links (detaching them: the pin is their last reference once no agent holds
/// them) and the maps of one version directory, then removes it.
fn remove_version(dir: &Path) -> Result<usize, BpfError> {
    let mut removed = 0;
    let links = dir.join("links");
    if let Ok(entries) = fs::read_dir(&links) {
        for e in entries.flatten() {
            let p = e.path();
            match PinnedLink::from_pin(&p) {
                Ok(link) => {
                    let _ = link.unpin();
                }
                Err(_) => {
                    let _ = fs::remove_file(&p);
                }
            }
            removed += 1;
        }
        let _ = fs::remove_dir(&links);
    }
    let maps = dir.join("maps");
    if let Ok(entries) = fs::read_dir(&maps) {
        for e in entries.flatten() {
            fs::remove_file(e.path()).map_err(io_err(&e.path()))?;
            removed += 1;
        }
        let _ = fs::remove_dir(&maps);
    }
    let _ = fs::remove_dir(dir);
    Ok(removed)
}

/// Make `Key` usable by callers without importing aya.
pub fn lpm_key<K: aya::Pod>(prefix_len: u32, data: K) -> Key<K> {
    Key::new(prefix_len, data)
}

/// Raw bpf(2) calls for what aya 0.14 cannot do: bpf_link creation and pinning for link
/// types it cannot convert to `FdLink` (cgroup device and sysctl), and lookups in a task
/// storage map (keyed by pidfd).
mod raw_link {
    use std::{
        ffi::CString,
        io,
        os::{
            fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
            unix::ffi::OsStrExt,
        },
        path::Path,
    };

    const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
    const BPF_OBJ_PIN: libc::c_long = 6;
    const BPF_LINK_CREATE: libc::c_long = 28;

    fn bpf(cmd: libc::c_long, attr: &mut [u64; 8]) -> io::Result<i64> {
        // SAFETY: `attr` is a zero-initialised 64-byte `union bpf_attr` of the command's
        // layout, valid for the duration of the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr.as_mut_ptr(),
                std::mem::size_of_val(attr) as libc::c_uint,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    /// `BPF_LINK_CREATE` of `prog` on the cgroup `cgroup` (flags 0: multi-attach).
    pub fn cgroup_link_create(
        prog: BorrowedFd<'_>,
        cgroup: BorrowedFd<'_>,
        attach_type: u32,
    ) -> io::Result<OwnedFd> {
        let mut attr = [0u64; 8];
        // link_create: __u32 prog_fd, __u32 target_fd, __u32 attach_type, __u32 flags.
        attr[0] = prog.as_raw_fd() as u32 as u64 | ((cgroup.as_raw_fd() as u32 as u64) << 32);
        attr[1] = attach_type as u64;
        let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
        // SAFETY: the kernel returned a new file descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// `BPF_OBJ_PIN` of `fd` at `path` (on a bpffs).
    pub fn pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut attr = [0u64; 8];
        // obj_pin: __aligned_u64 pathname, __u32 bpf_fd, __u32 file_flags.
        attr[0] = c.as_ptr() as u64;
        attr[1] = fd.as_raw_fd() as u32 as u64;
        bpf(BPF_OBJ_PIN, &mut attr).map(|_| ())
    }

    /// `pidfd_open(pid, 0)`.
    pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
        // SAFETY: plain syscall with scalar arguments.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel returned a new file descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// `BPF_MAP_LOOKUP_ELEM` in a task storage map whose key is a pidfd. `Ok(None)`:
    /// the task has no value.
    pub fn task_storage_lookup(
        map: BorrowedFd<'_>,
        pidfd: BorrowedFd<'_>,
    ) -> io::Result<Option<super::ExemptTask>> {
        let key: i32 = pidfd.as_raw_fd();
        let mut value = super::ExemptTask::default();
        let mut attr = [0u64; 8];
        // map_elem: __u32 map_fd, (pad), __aligned_u64 key, __aligned_u64 value, __u64 flags.
        attr[0] = map.as_raw_fd() as u32 as u64;
        attr[1] = &key as *const i32 as u64;
        attr[2] = &mut value as *mut super::ExemptTask as u64;
        match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
            Ok(_) => Ok(Some(value)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// `enum bpf_attach_type` values used above.
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_CGROUP_SYSCTL: u32 = 18;

#[cfg(test)]
mod abi {
    //! The compiled object's maps against the ABI types of enforcer-common: a layout
    //! mismatch fails here instead of corrupting maps at run time.
    use enforcer_common::*;

    use super::*;

    #[test]
    fn map_layouts_match_enforcer_common() {
        if OBJECT.is_empty() {
            eprintln!("SKIP: built with ENFORCER_SKIP_EBPF, no object to check");
            return;
        }
        let layouts = Datapath::object_map_layouts().expect("parse object");
        let u32s = size_of::<u32>() as u32;
        // (map, key size, value size); LPM trie keys are a u32 prefix length and the data.
        let expected: &[(&str, u32, u32)] = &[
            (map_names::CONFIG, u32s, size_of::<Config>() as u32),
            (map_names::ENDPOINTS, 8, size_of::<Endpoint>() as u32),
            (
                map_names::IPCACHE,
                u32s + size_of::<IpKey>() as u32,
                size_of::<IpInfo>() as u32,
            ),
            (
                map_names::POLICY,
                u32s + size_of::<PolicyKey>() as u32,
                size_of::<PolicyValue>() as u32,
            ),
            (
                map_names::CONNTRACK,
                size_of::<CtKey>() as u32,
                size_of::<CtValue>() as u32,
            ),
            (
                map_names::SERVICES,
                size_of::<SvcKey>() as u32,
                size_of::<SvcValue>() as u32,
            ),
            (
                map_names::BACKENDS,
                size_of::<BackendKey>() as u32,
                size_of::<Backend>() as u32,
            ),
            (
                map_names::AFFINITY,
                size_of::<AffinityKey>() as u32,
                size_of::<AffinityValue>() as u32,
            ),
            (
                map_names::REVNAT,
                size_of::<RevKey>() as u32,
                size_of::<RevValue>() as u32,
            ),
            (map_names::EVENTS, 0, 0),
            (map_names::COUNTERS, u32s, 8),
            (map_names::ARMED, 8, u32s),
            (
                map_names::GUARD_CONFIG,
                u32s,
                size_of::<GuardConfig>() as u32,
            ),
            (
                map_names::SYSCALL_RULES,
                u32s,
                size_of::<SyscallRule>() as u32,
            ),
            (
                map_names::SYSCALL_RULES_COMPAT,
                u32s,
                size_of::<SyscallRule>() as u32,
            ),
            (map_names::ROOT_LEVEL, u32s, 8),
            // Task storage: the key is an int (a pidfd from user space).
            (map_names::EXEMPT, u32s, size_of::<ExemptTask>() as u32),
            // The read-only globals: GUARD_OFFSETS is the whole of .rodata.
            (".rodata", u32s, size_of::<KernelOffsets>() as u32),
        ];
        // Maps private to the kernel side (not part of the ABI).
        let internal: [&str; 0] = [];
        for (name, key, value) in expected {
            let found = layouts
                .iter()
                .find(|(n, _, _)| n == name)
                .unwrap_or_else(|| panic!("map {name} is not in the object"));
            assert_eq!(
                (found.1, found.2),
                (*key, *value),
                "map {name}: (key, value) sizes in the object vs enforcer-common"
            );
        }
        for (name, _, _) in &layouts {
            let known = expected.iter().any(|(n, _, _)| n == name)
                || internal.contains(&name.as_str())
                || name.starts_with(".rodata.");
            assert!(
                known,
                "map {name} of the object is not checked by this test"
            );
        }
        for name in map_names::PINNED {
            assert!(
                layouts.iter().any(|(n, _, _)| n == name),
                "pinned map {name} is not in the object"
            );
        }
        // Events are written into the ring buffer as these records.
        assert_eq!(size_of::<GuardEvent>(), 120);
        assert_eq!(size_of::<NetEvent>(), 64);
    }

    /// Kernels before 6.16 refuse the task storage helpers in cgroup programs (see
    /// `enforcer-ebpf/src/guards/exempt.rs`): a cgroup program that calls one would fail to
    /// load there, and only some of them are loaded in the VM tier's 6.1 kernel. Such
    /// programs rely on arming (`subject_armed`), which this checks in the compiled code.
    #[test]
    fn cgroup_programs_do_not_use_task_storage() {
        use aya_obj::ProgramSection as S;
        if OBJECT.is_empty() {
            eprintln!("SKIP: built with ENFORCER_SKIP_EBPF, no object to check");
            return;
        }
        // bpf_task_storage_get, bpf_task_storage_delete, bpf_get_current_task_btf.
        const HELPERS: [i32; 3] = [156, 157, 158];
        const BPF_JMP_CALL: u8 = 0x85;
        let obj = aya_obj::Object::parse(OBJECT).expect("parse object");
        let mut checked = Vec::new();
        for (name, prog) in &obj.programs {
            let cgroup = matches!(
                prog.section,
                S::CgroupDevice
                    | S::CgroupSysctl
                    | S::CgroupSock { .. }
                    | S::CgroupSkb { .. }
                    | S::CgroupSockAddr { .. }
            );
            if !cgroup {
                continue;
            }
            let f = &obj.functions[&prog.function_key()];
            for (i, insn) in f.instructions.iter().enumerate() {
                assert!(
                    !(insn.code == BPF_JMP_CALL
                        && insn.src_reg() == 0
                        && HELPERS.contains(&insn.imm)),
                    "cgroup program {name} calls helper {} (instruction {i})",
                    insn.imm
                );
            }
            checked.push(name.as_str());
        }
        for must in ["guard_device", "guard_sysctl", "guard_sock_create"] {
            assert!(checked.contains(&must), "{must} not checked: {checked:?}");
        }
    }
}
