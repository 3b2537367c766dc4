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

use std::{
    collections::HashMap as StdHashMap,
    fs,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, MapError, lpm_trie::Key},
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, Lsm, ProgramError,
        links::{FdLink, PinnedLink},
    },
};
use enforcer_common::{
    ABI_VERSION, Config, CtKey, CtValue, Endpoint, IpInfo, IpKey, PolicyKey, PolicyValue,
};
use thiserror::Error;

/// The compiled `enforcer-ebpf` object.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/enforcer.bpf.o"));

/// Names of the maps, as the kernel object defines them.
pub mod map_names {
    pub const CONFIG: &str = "CONFIG";
    pub const ENDPOINTS: &str = "ENDPOINTS";
    pub const IPCACHE: &str = "IPCACHE";
    pub const POLICY: &str = "POLICY";
    pub const CONNTRACK: &str = "CONNTRACK";
    pub const EVENTS: &str = "EVENTS";
    pub const COUNTERS: &str = "COUNTERS";
    /// Maps that carry state across agent restarts, pinned when a pin directory is set.
    pub const PINNED: &[&str] = &[
        CONFIG, ENDPOINTS, IPCACHE, POLICY, CONNTRACK, EVENTS, COUNTERS,
    ];
}

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
];

/// LSM programs and their hooks.
pub const LSM_PROGRAMS: &[(&str, &str)] = &[("lsm_socket_create", "socket_create")];

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
    #[error("program {program}: attaching to {target}: {source}")]
    Attach {
        program: String,
        target: String,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("program {program}: its attachment is not a bpf_link (kernel too old?): {message}")]
    Link { program: String, message: String },
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
pub struct Datapath {
    ebpf: Ebpf,
    /// `<instance>/v<ABI>` when pinning.
    pin_dir: Option<PathBuf>,
    /// Attachments held by this process when not pinned.
    links: Vec<FdLink>,
}

impl Datapath {
    /// Load the object and create (or, with a pin directory, reuse) its maps. No program is
    /// loaded into the kernel yet.
    pub fn load(instance_dir: Option<&Path>) -> Result<Self, BpfError> {
        if OBJECT.is_empty() {
            return Err(BpfError::NoObject);
        }
        raise_memlock();
        let pin_dir = instance_dir.map(|d| d.join(format!("v{ABI_VERSION}")));
        let mut loader = EbpfLoader::new();
        let mut paths = StdHashMap::new();
        if let Some(dir) = &pin_dir {
            let maps = dir.join("maps");
            fs::create_dir_all(&maps).map_err(io_err(&maps))?;
            fs::create_dir_all(dir.join("links")).map_err(io_err(dir))?;
            for name in map_names::PINNED {
                paths.insert(*name, maps.join(name));
            }
        }
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let ebpf = loader.load(OBJECT).map_err(BpfError::Object)?;
        Ok(Self {
            ebpf,
            pin_dir,
            links: Vec::new(),
        })
    }

    pub fn pin_dir(&self) -> Option<&Path> {
        self.pin_dir.as_deref()
    }

    fn keep(&mut self, program: &str, link: FdLink) -> Result<(), BpfError> {
        match &self.pin_dir {
            Some(dir) => {
                let path = dir.join("links").join(program);
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
        for (name, attach_type) in NET_SKB_PROGRAMS {
            let prog: &mut CgroupSkb = self.program(name)?;
            prog.load().map_err(|source| load_err(name, source))?;
            let id = prog
                .attach(cg.as_fd(), *attach_type, CgroupAttachMode::Single)
                .map_err(|source| attach_err(name, &target, source))?;
            let link = prog
                .take_link(id)
                .map_err(|source| attach_err(name, &target, source))?;
            let link = fd_link(name, link)?;
            self.keep(name, link)?;
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
            let link = fd_link(name, link)?;
            self.keep(name, link)?;
        }
        Ok(())
    }

    /// Load and attach LSM programs (all of `LSM_PROGRAMS` when `only` is empty).
    pub fn attach_lsm(&mut self, only: &[&str]) -> Result<(), BpfError> {
        let btf = Btf::from_sys_fs().map_err(BpfError::Btf)?;
        for (name, hook) in LSM_PROGRAMS {
            if !only.is_empty() && !only.contains(name) {
                continue;
            }
            let prog: &mut Lsm = self.program(name)?;
            prog.load(hook, &btf)
                .map_err(|source| load_err(name, source))?;
            let id = prog
                .attach()
                .map_err(|source| attach_err(name, hook, source))?;
            let link = prog
                .take_link(id)
                .map_err(|source| attach_err(name, hook, source))?;
            let link = fd_link(name, link)?;
            self.keep(name, link)?;
        }
        Ok(())
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

    /// Sum of a per-CPU counter (`CNT_*`).
    pub fn counter(&mut self, idx: u32) -> Result<u64, BpfError> {
        let map = self.map_mut(map_names::COUNTERS)?;
        let arr: aya::maps::PerCpuArray<&mut MapData, u64> =
            aya::maps::PerCpuArray::try_from(map).map_err(map_err(map_names::COUNTERS))?;
        let v = arr.get(&idx, 0).map_err(map_err(map_names::COUNTERS))?;
        Ok(v.iter().sum())
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

fn load_err(program: &str, source: ProgramError) -> BpfError {
    BpfError::Load {
        program: program.into(),
        source: Box::new(source),
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
    let mut removed = 0;
    if !instance_dir.exists() {
        return Ok(0);
    }
    let versions = fs::read_dir(instance_dir).map_err(io_err(instance_dir))?;
    for v in versions.flatten() {
        let links = v.path().join("links");
        if let Ok(entries) = fs::read_dir(&links) {
            for e in entries.flatten() {
                let p = e.path();
                // Unpinning the last reference to a link detaches it.
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
        let maps = v.path().join("maps");
        if let Ok(entries) = fs::read_dir(&maps) {
            for e in entries.flatten() {
                fs::remove_file(e.path()).map_err(io_err(&e.path()))?;
                removed += 1;
            }
            let _ = fs::remove_dir(&maps);
        }
        let _ = fs::remove_dir(v.path());
    }
    let _ = fs::remove_dir(instance_dir);
    Ok(removed)
}

/// Make `Key` usable by callers without importing aya.
pub fn lpm_key<K: aya::Pod>(prefix_len: u32, data: K) -> Key<K> {
    Key::new(prefix_len, data)
}
