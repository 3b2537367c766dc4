//! A small reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`): enough to find the byte
//! offset and size of a struct member, through anonymous struct/union members, typedefs
//! and qualifiers. (aya-obj parses BTF too but keeps struct members private.)
//!
//! Format: `Documentation/bpf/btf.rst` — a header, a type section (one `btf_type` record
//! per type id from 1, each followed by kind-specific data) and a string section.

use std::{collections::HashMap, path::Path};

use thiserror::Error;

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Error)]
pub enum BtfError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed BTF: {0}")]
    Malformed(String),
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FieldError {
    #[error("struct {0} is not in the kernel's BTF")]
    NoStruct(String),
    #[error("struct {structure} has no member {member} in the kernel's BTF")]
    NoMember { structure: String, member: String },
    #[error("{structure}.{member} is a bitfield")]
    Bitfield { structure: String, member: String },
    #[error("{structure}.{member} is not a struct or union, cannot look up .{next}")]
    NotComposite {
        structure: String,
        member: String,
        next: String,
    },
}

/// A member's place: byte offset from the start of the outer struct, and size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub offset: u32,
    pub size: u32,
}

#[derive(Clone, Debug)]
struct Member {
    name: u32,
    ty: u32,
    /// Bit offset; with `kind_flag`, the high 8 bits are a bitfield size.
    offset: u32,
}

#[derive(Clone, Debug)]
enum Type {
    Void,
    /// size in bytes
    Int(u32),
    Ptr,
    Array {
        elem: u32,
        len: u32,
    },
    Composite {
        name: u32,
        size: u32,
        kind_flag: bool,
        members: Vec<Member>,
    },
    Enum(u32),
    /// typedef, volatile, const, restrict, type tag
    Alias(u32),
    Float(u32),
    /// A function: its name and its `FuncProto`.
    Func {
        name: u32,
        proto: u32,
    },
    /// A function prototype: parameter names (string offsets).
    FuncProto(Vec<u32>),
    Other,
}

/// Parsed kernel BTF.
pub struct KernelBtf {
    types: Vec<Type>,
    strings: Vec<u8>,
    by_name: HashMap<String, u32>,
    funcs: HashMap<String, u32>,
}

fn u16_at(b: &[u8], o: usize) -> Result<u16, BtfError> {
    b.get(o..o + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| BtfError::Malformed(format!("truncated at {o}")))
}

fn u32_at(b: &[u8], o: usize) -> Result<u32, BtfError> {
    b.get(o..o + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| BtfError::Malformed(format!("truncated at {o}")))
}

impl KernelBtf {
    /// The running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new(VMLINUX))
    }

    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let bytes = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&bytes)
    }

    /// Parse raw BTF (little-endian, as on every architecture enforcer supports).
    pub fn parse(b: &[u8]) -> Result<Self, BtfError> {
        if u16_at(b, 0)? != MAGIC {
            return Err(BtfError::Malformed(
                "bad magic (not little-endian BTF?)".into(),
            ));
        }
        let hdr_len = u32_at(b, 4)? as usize;
        let type_off = u32_at(b, 8)? as usize;
        let type_len = u32_at(b, 12)? as usize;
        let str_off = u32_at(b, 16)? as usize;
        let str_len = u32_at(b, 20)? as usize;
        let types_start = hdr_len + type_off;
        let types_end = types_start + type_len;
        let str_start = hdr_len + str_off;
        let strings = b
            .get(str_start..str_start + str_len)
            .ok_or_else(|| BtfError::Malformed("string section out of bounds".into()))?
            .to_vec();
        if types_end > b.len() {
            return Err(BtfError::Malformed("type section out of bounds".into()));
        }
        let mut types = vec![Type::Void];
        let mut o = types_start;
        while o < types_end {
            let name = u32_at(b, o)?;
            let info = u32_at(b, o + 4)?;
            let size_or_type = u32_at(b, o + 8)?;
            o += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let t = match kind {
                KIND_INT => {
                    o += 4;
                    Type::Int(size_or_type)
                }
                KIND_PTR => Type::Ptr,
                KIND_ARRAY => {
                    let elem = u32_at(b, o)?;
                    let len = u32_at(b, o + 8)?;
                    o += 12;
                    Type::Array { elem, len }
                }
                KIND_STRUCT | KIND_UNION => {
                    let mut members = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        members.push(Member {
                            name: u32_at(b, o)?,
                            ty: u32_at(b, o + 4)?,
                            offset: u32_at(b, o + 8)?,
                        });
                        o += 12;
                    }
                    Type::Composite {
                        name,
                        size: size_or_type,
                        kind_flag,
                        members,
                    }
                }
                KIND_ENUM => {
                    o += 8 * vlen;
                    Type::Enum(size_or_type)
                }
                KIND_ENUM64 => {
                    o += 12 * vlen;
                    Type::Enum(size_or_type)
                }
                KIND_FUNC => Type::Func {
                    name,
                    proto: size_or_type,
                },
                KIND_FWD => Type::Other,
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    Type::Alias(size_or_type)
                }
                KIND_FUNC_PROTO => {
                    let mut params = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        params.push(u32_at(b, o)?);
                        o += 8;
                    }
                    Type::FuncProto(params)
                }
                KIND_VAR => {
                    o += 4;
                    Type::Other
                }
                KIND_DATASEC => {
                    o += 12 * vlen;
                    Type::Other
                }
                KIND_FLOAT => Type::Float(size_or_type),
                KIND_DECL_TAG => {
                    o += 4;
                    Type::Other
                }
                k => return Err(BtfError::Malformed(format!("unknown kind {k} at {o}"))),
            };
            types.push(t);
        }
        let mut btf = KernelBtf {
            types,
            strings,
            by_name: HashMap::new(),
            funcs: HashMap::new(),
        };
        let mut by_name = HashMap::new();
        let mut funcs = HashMap::new();
        for (id, t) in btf.types.iter().enumerate() {
            match t {
                Type::Composite { name, .. } if *name != 0 => {
                    // The first definition wins (names of kernel structs are unique).
                    by_name
                        .entry(btf.str_at(*name).to_string())
                        .or_insert(id as u32);
                }
                Type::Func { name, proto } => {
                    funcs.entry(btf.str_at(*name).to_string()).or_insert(*proto);
                }
                _ => {}
            }
        }
        btf.by_name = by_name;
        btf.funcs = funcs;
        Ok(btf)
    }

    /// Parameter names of the kernel function `name`, or None if the BTF has no such
    /// function. (The BPF LSM's `bpf_lsm_<hook>` functions carry each hook's signature.)
    pub fn func_params(&self, name: &str) -> Option<Vec<&str>> {
        let proto = *self.funcs.get(name)?;
        match self.ty(proto) {
            Type::FuncProto(params) => Some(params.iter().map(|p| self.str_at(*p)).collect()),
            _ => None,
        }
    }

    fn str_at(&self, off: u32) -> &str {
        let s = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = s.iter().position(|c| *c == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    }

    fn ty(&self, id: u32) -> &Type {
        self.types.get(id as usize).unwrap_or(&Type::Void)
    }

    /// Follow typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.ty(id) {
                Type::Alias(t) => id = *t,
                _ => break,
            }
        }
        id
    }

    /// Size in bytes of a type (pointers are 8 bytes: enforcer supports 64-bit kernels).
    pub fn size_of(&self, id: u32) -> u32 {
        match self.ty(self.resolve(id)) {
            Type::Int(s) | Type::Enum(s) | Type::Float(s) => *s,
            Type::Composite { size, .. } => *size,
            Type::Ptr => 8,
            Type::Array { elem, len } => self.size_of(*elem) * len,
            _ => 0,
        }
    }

    /// Is there a struct or union of that name?
    pub fn has_struct(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Find `member` in the composite `id`, looking into anonymous members. Returns the
    /// bit offset from the start of `id`, the member's type and whether it is a bitfield.
    fn find(&self, id: u32, member: &str, depth: u32) -> Option<(u32, u32, bool)> {
        if depth > 8 {
            return None;
        }
        let Type::Composite {
            kind_flag, members, ..
        } = self.ty(self.resolve(id))
        else {
            return None;
        };
        for m in members {
            let (bit_off, bitfield) = if *kind_flag {
                (m.offset & 0x00ff_ffff, m.offset >> 24 != 0)
            } else {
                (m.offset, false)
            };
            if m.name != 0 && self.str_at(m.name) == member {
                return Some((bit_off, m.ty, bitfield));
            }
        }
        for m in members {
            let bit_off = if *kind_flag {
                m.offset & 0x00ff_ffff
            } else {
                m.offset
            };
            if m.name == 0
                && let Some((o, t, bf)) = self.find(m.ty, member, depth + 1)
            {
                return Some((bit_off + o, t, bf));
            }
        }
        None
    }

    /// Byte offset and size of `path` (`"cred"`, or nested `"thread_info.status"`) in
    /// `struct structure`.
    pub fn field(&self, structure: &str, path: &str) -> Result<Field, FieldError> {
        let mut id = *self
            .by_name
            .get(structure)
            .ok_or_else(|| FieldError::NoStruct(structure.into()))?;
        let mut bits = 0u32;
        let mut size = 0;
        let parts: Vec<&str> = path.split('.').collect();
        let mut outer = structure.to_string();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 && !matches!(self.ty(self.resolve(id)), Type::Composite { .. }) {
                return Err(FieldError::NotComposite {
                    structure: outer,
                    member: parts[i - 1].into(),
                    next: (*part).into(),
                });
            }
            let (o, t, bitfield) = self.find(id, part, 0).ok_or_else(|| FieldError::NoMember {
                structure: outer.clone(),
                member: (*part).into(),
            })?;
            if bitfield || o % 8 != 0 {
                return Err(FieldError::Bitfield {
                    structure: outer,
                    member: (*part).into(),
                });
            }
            bits += o;
            size = self.size_of(t);
            id = t;
            outer = format!("{outer}.{part}");
        }
        Ok(Field {
            offset: bits / 8,
            size,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds BTF blobs for tests.
    #[derive(Default)]
    pub struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        pub fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }

        fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }

        fn head(&mut self, name: &str, kind: u32, vlen: u32, kind_flag: bool, x: u32) -> u32 {
            let n = self.s(name);
            let info = (kind << 24) | vlen | if kind_flag { 1 << 31 } else { 0 };
            for v in [n, info, x] {
                self.types.extend_from_slice(&v.to_le_bytes());
            }
            let id = self.next_id;
            self.next_id += 1;
            id
        }

        pub fn int(&mut self, name: &str, size: u32) -> u32 {
            let id = self.head(name, KIND_INT, 0, false, size);
            self.types.extend_from_slice(&(size * 8).to_le_bytes());
            id
        }

        pub fn ptr(&mut self, to: u32) -> u32 {
            self.head("", KIND_PTR, 0, false, to)
        }

        pub fn typedef(&mut self, name: &str, to: u32) -> u32 {
            self.head(name, KIND_TYPEDEF, 0, false, to)
        }

        pub fn array(&mut self, elem: u32, len: u32) -> u32 {
            let id = self.head("", KIND_ARRAY, 0, false, 0);
            for v in [elem, elem, len] {
                self.types.extend_from_slice(&v.to_le_bytes());
            }
            id
        }

        /// A function and its prototype (parameters of type `ty`).
        pub fn func(&mut self, name: &str, params: &[&str], ty: u32) -> u32 {
            let proto = self.head("", KIND_FUNC_PROTO, params.len() as u32, false, ty);
            for p in params {
                let n = self.s(p);
                for v in [n, ty] {
                    self.types.extend_from_slice(&v.to_le_bytes());
                }
            }
            self.head(name, KIND_FUNC, 0, false, proto)
        }

        /// Members: (name, type, bit offset, bitfield size).
        pub fn composite(
            &mut self,
            union: bool,
            name: &str,
            size: u32,
            members: &[(&str, u32, u32, u32)],
        ) -> u32 {
            let kind_flag = members.iter().any(|m| m.3 != 0);
            let kind = if union { KIND_UNION } else { KIND_STRUCT };
            let id = self.head(name, kind, members.len() as u32, kind_flag, size);
            for (n, t, off, bf) in members {
                let n = self.s(n);
                let off = if kind_flag { (bf << 24) | off } else { *off };
                for v in [n, *t, off] {
                    self.types.extend_from_slice(&v.to_le_bytes());
                }
            }
            id
        }

        pub fn build(&self) -> Vec<u8> {
            let mut b = Vec::new();
            b.extend_from_slice(&MAGIC.to_le_bytes());
            b.push(1);
            b.push(0);
            b.extend_from_slice(&24u32.to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
            b.extend_from_slice(&(self.types.len() as u32).to_le_bytes());
            b.extend_from_slice(&(self.types.len() as u32).to_le_bytes());
            b.extend_from_slice(&(self.strings.len() as u32).to_le_bytes());
            b.extend_from_slice(&self.types);
            b.extend_from_slice(&self.strings);
            b
        }
    }

    fn sample() -> KernelBtf {
        let mut b = Builder::new();
        let int = b.int("int", 4);
        let u64t = b.int("long long unsigned int", 8);
        let kuid = b.composite(false, "", 4, &[("val", int, 0, 0)]);
        let kuid_t = b.typedef("kuid_t", kuid);
        let inner = b.composite(false, "inner", 16, &[("a", int, 0, 0), ("b", u64t, 64, 0)]);
        let anon_s = b.composite(false, "", 8, &[("deep", u64t, 0, 0)]);
        let anon_u = b.composite(true, "", 16, &[("y", int, 0, 0), ("", anon_s, 0, 0)]);
        let p = b.ptr(inner);
        let arr = b.array(u64t, 3);
        b.composite(
            false,
            "outer",
            72,
            &[
                ("x", int, 0, 0),
                ("uid", kuid_t, 32, 0),
                ("", anon_u, 64, 0),
                ("in", inner, 192, 0),
                ("ptr", p, 320, 0),
                ("regs", arr, 384, 0),
            ],
        );
        b.composite(
            false,
            "bits",
            4,
            &[("lo", int, 0, 3), ("hi", int, 3, 5), ("whole", int, 8, 0)],
        );
        KernelBtf::parse(&b.build()).expect("parse synthetic BTF")
    }

    #[test]
    fn finds_plain_typedef_and_nested_members() {
        let btf = sample();
        assert_eq!(
            btf.field("outer", "x").unwrap(),
            Field { offset: 0, size: 4 }
        );
        assert_eq!(
            btf.field("outer", "uid").unwrap(),
            Field { offset: 4, size: 4 }
        );
        assert_eq!(
            btf.field("outer", "in.b").unwrap(),
            Field {
                offset: 32,
                size: 8
            }
        );
        assert_eq!(
            btf.field("outer", "ptr").unwrap(),
            Field {
                offset: 40,
                size: 8
            }
        );
        assert_eq!(
            btf.field("outer", "regs").unwrap(),
            Field {
                offset: 48,
                size: 24
            }
        );
    }

    #[test]
    fn looks_through_anonymous_members() {
        let btf = sample();
        assert_eq!(
            btf.field("outer", "y").unwrap(),
            Field { offset: 8, size: 4 }
        );
        assert_eq!(
            btf.field("outer", "deep").unwrap(),
            Field { offset: 8, size: 8 }
        );
    }

    #[test]
    fn reports_what_is_missing() {
        let btf = sample();
        assert_eq!(
            btf.field("nope", "x"),
            Err(FieldError::NoStruct("nope".into()))
        );
        assert_eq!(
            btf.field("outer", "zz"),
            Err(FieldError::NoMember {
                structure: "outer".into(),
                member: "zz".into()
            })
        );
        assert_eq!(
            btf.field("outer", "in.zz"),
            Err(FieldError::NoMember {
                structure: "outer.in".into(),
                member: "zz".into()
            })
        );
        assert!(matches!(
            btf.field("outer", "x.y"),
            Err(FieldError::NotComposite { .. })
        ));
        assert!(matches!(
            btf.field("bits", "hi"),
            Err(FieldError::Bitfield { .. })
        ));
        assert_eq!(
            btf.field("bits", "whole").unwrap(),
            Field { offset: 1, size: 4 }
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(KernelBtf::parse(b"not btf at all, not at all").is_err());
        let mut blob = sample_blob_truncated();
        blob.truncate(30);
        assert!(KernelBtf::parse(&blob).is_err());
    }

    fn sample_blob_truncated() -> Vec<u8> {
        let mut b = Builder::new();
        let int = b.int("int", 4);
        b.composite(false, "s", 4, &[("a", int, 0, 0)]);
        b.build()
    }

    /// The host kernel's own BTF, when it has one (every kernel enforcer targets does).
    pub fn host() -> Option<KernelBtf> {
        if !Path::new(VMLINUX).exists() {
            eprintln!("SKIP: {VMLINUX} is missing");
            return None;
        }
        Some(KernelBtf::from_sys_fs().expect("parse the host's BTF"))
    }

    #[test]
    fn function_parameters() {
        let mut b = Builder::new();
        let int = b.int("int", 4);
        b.func("bpf_lsm_perf_event_open", &["type"], int);
        b.func("bpf_lsm_bpf", &["cmd", "attr", "size", "kernel"], int);
        let btf = KernelBtf::parse(&b.build()).unwrap();
        assert_eq!(
            btf.func_params("bpf_lsm_perf_event_open"),
            Some(vec!["type"])
        );
        assert_eq!(
            btf.func_params("bpf_lsm_bpf"),
            Some(vec!["cmd", "attr", "size", "kernel"])
        );
        assert_eq!(btf.func_params("bpf_lsm_nothing"), None);
    }

    #[test]
    fn host_lsm_hook_signatures() {
        let Some(btf) = host() else { return };
        // Stable since the BPF LSM exists.
        assert_eq!(
            btf.func_params("bpf_lsm_socket_create"),
            Some(vec!["family", "type", "protocol", "kern"])
        );
        assert_eq!(
            btf.func_params("bpf_lsm_capable"),
            Some(vec!["cred", "ns", "cap", "opts"])
        );
    }

    #[test]
    fn host_vmlinux_fields() {
        let Some(btf) = host() else { return };
        for (s, f, size) in [
            ("cred", "uid", 4),
            ("cred", "euid", 4),
            ("cred", "cap_permitted", 8),
            ("task_struct", "cred", 8),
            ("task_struct", "tgid", 4),
            ("kernfs_node", "id", 8),
            ("linux_binprm", "cred", 8),
        ] {
            let got = btf.field(s, f).unwrap_or_else(|e| panic!("{s}.{f}: {e}"));
            assert_eq!(got.size, size, "{s}.{f} size");
        }
        // Known fixed layouts: kuid_t uid right after `usage` (atomic_t/atomic_long_t).
        let uid = btf.field("cred", "uid").unwrap();
        let usage = btf.field("cred", "usage").unwrap();
        assert_eq!(
            uid.offset,
            usage.offset + usage.size,
            "cred.uid follows usage"
        );
        // task_struct starts with thread_info on x86 and arm64 (THREAD_INFO_IN_TASK).
        assert_eq!(btf.field("task_struct", "thread_info").unwrap().offset, 0);
    }
}
