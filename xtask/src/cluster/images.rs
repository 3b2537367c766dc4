//! Container images for the cluster, assembled here without a container engine.
//!
//! No registry is reachable from these machines, so every image a manifest names is built
//! locally as a one-layer docker-archive (`manifest.json` + config + layer, deterministic:
//! same inputs, same image id) and imported into containerd under that name. Pods ask for
//! them with `imagePullPolicy: IfNotPresent` (or a tag the kubelet does not pull), so no
//! pull is ever attempted.

use std::{
    collections::BTreeSet,
    fs::{self, File},
    io::{self, Read, Write},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::{
    AGNHOST_VERSION, COREDNS_VERSION, ETCD_VERSION, K8S_VERSION, PAUSE_VERSION,
    build::{Bins, hex},
};
use crate::util::output;

/// One image: files from the host at paths in the image, symlinks, and how it starts.
pub struct Image {
    pub name: String,
    files: Vec<(PathBuf, String)>,
    links: Vec<(String, String)>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    user: String,
}

/// A built image archive.
#[derive(Clone, Debug)]
pub struct Archive {
    pub name: String,
    pub path: PathBuf,
    /// The image id (digest of its config): the same for the same contents.
    pub id: String,
}

pub fn pause_image() -> String {
    format!("registry.k8s.io/pause:{PAUSE_VERSION}")
}
pub fn etcd_image() -> String {
    format!("registry.k8s.io/etcd:{ETCD_VERSION}-0")
}
pub fn control_plane_image(component: &str) -> String {
    format!("registry.k8s.io/{component}:{K8S_VERSION}")
}
pub fn coredns_image() -> String {
    format!("registry.k8s.io/coredns/coredns:{COREDNS_VERSION}")
}
pub fn agnhost_image() -> String {
    format!("registry.k8s.io/e2e-test-images/agnhost:{AGNHOST_VERSION}")
}
/// Debian's busybox-static: a shell and the usual tools for test pods.
pub fn busybox_image() -> String {
    "docker.io/library/busybox:1.35-debian-static".into()
}

const BUSYBOX: &str = "/bin/busybox";

fn busybox_links() -> Result<Vec<(String, String)>> {
    let list = output(Command::new(BUSYBOX).arg("--list"))
        .context("busybox-static (Debian package busybox-static) is needed for test images")?;
    Ok(list
        .lines()
        .filter(|a| !a.is_empty() && *a != "busybox")
        .map(|a| (format!("/bin/{a}"), "busybox".to_string()))
        .collect())
}

fn single_binary(name: String, src: PathBuf, dest: &str, user: &str) -> Image {
    Image {
        name,
        files: vec![(src, dest.to_string())],
        links: vec![],
        entrypoint: vec![dest.to_string()],
        cmd: vec![],
        user: user.into(),
    }
}

/// Every image the cluster's manifests and the test suites name.
pub fn catalogue(bins: &Bins) -> Result<Vec<Image>> {
    let mut v = vec![
        // As upstream's: runs as 65535.
        single_binary(pause_image(), bins.path("pause"), "/pause", "65535:65535"),
        single_binary(etcd_image(), bins.path("etcd"), "/usr/local/bin/etcd", "0"),
        single_binary(coredns_image(), bins.path("coredns"), "/coredns", "0"),
    ];
    for c in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ] {
        v.push(single_binary(
            control_plane_image(c),
            bins.path(c),
            &format!("/usr/local/bin/{c}"),
            "0",
        ));
    }
    // Upstream's agnhost image is Alpine-based: a shell and tools next to /agnhost.
    let links = busybox_links()?;
    v.push(Image {
        name: agnhost_image(),
        files: vec![
            (bins.path("agnhost"), "/agnhost".into()),
            (PathBuf::from(BUSYBOX), "/bin/busybox".into()),
        ],
        links: links.clone(),
        entrypoint: vec!["/agnhost".into()],
        cmd: vec![],
        user: "0".into(),
    });
    v.push(Image {
        name: busybox_image(),
        files: vec![(PathBuf::from(BUSYBOX), "/bin/busybox".into())],
        links,
        entrypoint: vec![],
        cmd: vec!["sh".into()],
        user: "0".into(),
    });
    Ok(v)
}

/// Build every image of [`catalogue`] (cached next to the binaries).
pub fn build_all(bins: &Bins) -> Result<Vec<Archive>> {
    let dir = bins.dir.join("images");
    fs::create_dir_all(&dir)?;
    catalogue(bins)?
        .iter()
        .map(|img| {
            let file: String = img
                .name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '.' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let path = dir.join(format!("{file}.tar"));
            let id_file = path.with_extension("id");
            if let (true, Ok(id)) = (path.exists(), fs::read_to_string(&id_file)) {
                return Ok(Archive {
                    name: img.name.clone(),
                    path,
                    id,
                });
            }
            let id = write_archive(img, &path)
                .with_context(|| format!("building image {}", img.name))?;
            fs::write(&id_file, &id)?;
            Ok(Archive {
                name: img.name.clone(),
                path,
                id,
            })
        })
        .collect()
}

fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    // GNU long names are handled by append_data; set_path is only for short ones.
    let _ = h.set_path(path);
    h
}

/// Write the image's filesystem layer (deterministic) and return its sha256.
fn write_layer(img: &Image, out: &Path) -> Result<String> {
    let mut dirs = BTreeSet::new();
    let mut add_parents = |p: &str| {
        let mut cur = Path::new(p.trim_start_matches('/'));
        while let Some(parent) = cur.parent() {
            if parent.as_os_str().is_empty() {
                break;
            }
            dirs.insert(parent.to_string_lossy().into_owned());
            cur = parent;
        }
    };
    for (_, dest) in &img.files {
        add_parents(dest);
    }
    for (dest, _) in &img.links {
        add_parents(dest);
    }
    let file = File::create(out)?;
    let mut tar = tar::Builder::new(HashingWriter::new(file));
    for d in &dirs {
        let mut h = header(&format!("{d}/"), tar::EntryType::Directory, 0o755, 0);
        tar.append_data(&mut h, format!("{d}/"), io::empty())?;
    }
    // /tmp exists in every image runtimes are used to.
    let mut h = header("tmp/", tar::EntryType::Directory, 0o1777, 0);
    tar.append_data(&mut h, "tmp/", io::empty())?;
    for (src, dest) in &img.files {
        let f = File::open(src).with_context(|| format!("opening {}", src.display()))?;
        let size = f.metadata()?.len();
        let rel = dest.trim_start_matches('/');
        let mut h = header(rel, tar::EntryType::Regular, 0o755, size);
        tar.append_data(&mut h, rel, f)?;
    }
    for (dest, target) in &img.links {
        let rel = dest.trim_start_matches('/');
        let mut h = header(rel, tar::EntryType::Symlink, 0o777, 0);
        tar.append_link(&mut h, rel, target)?;
    }
    let w = tar.into_inner()?;
    Ok(w.finish())
}

/// A writer that hashes what passes through it.
struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hash: Sha256::new(),
        }
    }
    fn finish(self) -> String {
        hex(&self.hash.finalize())
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Write `img` as a docker-archive at `out`; returns the image id (config digest).
fn write_archive(img: &Image, out: &Path) -> Result<String> {
    let layer_path = out.with_extension("layer");
    let layer_sha = write_layer(img, &layer_path)?;
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Entrypoint": if img.entrypoint.is_empty() { serde_json::Value::Null } else { img.entrypoint.clone().into() },
            "Cmd": if img.cmd.is_empty() { serde_json::Value::Null } else { img.cmd.clone().into() },
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "User": img.user,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_sha}")]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "cargo xtask cluster (enforcer test infrastructure)"}],
    });
    let config = serde_json::to_vec(&config)?;
    let config_sha = hex(&Sha256::digest(&config));
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": format!("{config_sha}.json"),
        "RepoTags": [img.name],
        "Layers": [format!("{layer_sha}/layer.tar")],
    }]))?;

    let tmp = out.with_extension("tmp");
    let mut tar = tar::Builder::new(File::create(&tmp)?);
    let mut add = |name: &str, size: u64, data: &mut dyn Read| -> Result<()> {
        let mut h = header(name, tar::EntryType::Regular, 0o644, size);
        tar.append_data(&mut h, name, data)?;
        Ok(())
    };
    let layer = File::open(&layer_path)?;
    let layer_size = layer.metadata()?.len();
    add(
        &format!("{layer_sha}/layer.tar"),
        layer_size,
        &mut io::BufReader::new(layer),
    )?;
    add(
        &format!("{config_sha}.json"),
        config.len() as u64,
        &mut config.as_slice(),
    )?;
    add(
        "manifest.json",
        manifest.len() as u64,
        &mut manifest.as_slice(),
    )?;
    tar.into_inner()?.flush()?;
    fs::remove_file(&layer_path)?;
    fs::rename(&tmp, out)?;
    Ok(format!("sha256:{config_sha}"))
}
