//! The cluster's certificates and kubeconfigs, made with the openssl command line.
//!
//! One CA signs everything (as `local-up-cluster.sh` with ENABLE_SINGLE_CA_SIGNER): the API
//! server's serving certificate, one client certificate per component with the user and
//! groups the built-in RBAC bindings expect (system:kube-controller-manager,
//! system:kube-scheduler, system:kube-proxy, system:node:<node> in system:nodes, an admin in
//! system:masters), the kubelet's serving certificate and the service account key pair.
//! Keys are ECDSA P-256. Files are made once per cluster and reused by a second `up`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Result;

use super::{API_PORT, API_SERVICE_IP, Layout, NODE_IP, NODE_NAME, write};
use crate::util::output;

/// A client or server certificate to make.
struct Cert {
    name: &'static str,
    cn: String,
    org: Option<&'static str>,
    server: bool,
    sans: Vec<String>,
}

fn openssl(dir: &Path) -> Command {
    let mut c = Command::new("openssl");
    c.current_dir(dir);
    c
}

fn new_key(dir: &Path, name: &str) -> Result<()> {
    output(openssl(dir).args([
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &format!("{name}.key"),
    ]))?;
    Ok(())
}

fn certs() -> Vec<Cert> {
    let client = |name, cn: &str, org| Cert {
        name,
        cn: cn.to_string(),
        org,
        server: false,
        sans: vec![],
    };
    vec![
        Cert {
            name: "apiserver",
            cn: "kube-apiserver".into(),
            org: None,
            server: true,
            sans: [
                "DNS:kubernetes",
                "DNS:kubernetes.default",
                "DNS:kubernetes.default.svc",
                "DNS:kubernetes.default.svc.cluster.local",
                "DNS:localhost",
            ]
            .iter()
            .map(|s| s.to_string())
            .chain([
                format!("DNS:{NODE_NAME}"),
                format!("IP:{API_SERVICE_IP}"),
                format!("IP:{NODE_IP}"),
                "IP:127.0.0.1".into(),
            ])
            .collect(),
        },
        Cert {
            name: "kubelet-serving",
            cn: format!("system:node:{NODE_NAME}"),
            org: Some("system:nodes"),
            server: true,
            sans: vec![format!("DNS:{NODE_NAME}"), format!("IP:{NODE_IP}")],
        },
        client("admin", "kubernetes-admin", Some("system:masters")),
        // The API server's client identity towards kubelets (exec, logs, port-forward).
        client(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            Some("system:masters"),
        ),
        client("controller-manager", "system:kube-controller-manager", None),
        client("scheduler", "system:kube-scheduler", None),
        client("kube-proxy", "system:kube-proxy", None),
        client(
            "kubelet",
            &format!("system:node:{NODE_NAME}"),
            Some("system:nodes"),
        ),
    ]
}

/// Make whatever is missing under `layout.pki()`.
pub fn ensure(layout: &Layout) -> Result<()> {
    let dir = layout.pki();
    fs::create_dir_all(&dir)?;
    if !dir.join("ca.crt").exists() {
        new_key(&dir, "ca")?;
        output(openssl(&dir).args([
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-sha256",
            "-days",
            "3650",
            "-subj",
            "/CN=enforcer-test-cluster-ca",
            "-out",
            "ca.crt",
        ]))?;
    }
    if !dir.join("sa.pub").exists() {
        new_key(&dir, "sa")?;
        output(openssl(&dir).args(["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"]))?;
    }
    for c in certs() {
        if dir.join(format!("{}.crt", c.name)).exists() {
            continue;
        }
        new_key(&dir, c.name)?;
        let subj = match c.org {
            Some(o) => format!("/O={o}/CN={}", c.cn),
            None => format!("/CN={}", c.cn),
        };
        output(openssl(&dir).args([
            "req",
            "-new",
            "-key",
            &format!("{}.key", c.name),
            "-subj",
            &subj,
            "-out",
            &format!("{}.csr", c.name),
        ]))?;
        let mut ext = String::from("basicConstraints=critical,CA:FALSE\n");
        ext.push_str("keyUsage=critical,digitalSignature,keyEncipherment\n");
        ext.push_str(if c.server {
            "extendedKeyUsage=serverAuth\n"
        } else {
            "extendedKeyUsage=clientAuth\n"
        });
        if !c.sans.is_empty() {
            ext.push_str(&format!("subjectAltName={}\n", c.sans.join(",")));
        }
        let ext_file = dir.join(format!("{}.ext", c.name));
        fs::write(&ext_file, ext)?;
        output(openssl(&dir).args([
            "x509",
            "-req",
            "-in",
            &format!("{}.csr", c.name),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-sha256",
            "-days",
            "3650",
            "-extfile",
            &format!("{}.ext", c.name),
            "-out",
            &format!("{}.crt", c.name),
        ]))?;
        let _ = fs::remove_file(dir.join(format!("{}.csr", c.name)));
        let _ = fs::remove_file(ext_file);
    }
    for (file, cert) in [
        ("admin.kubeconfig", "admin"),
        ("controller-manager.kubeconfig", "controller-manager"),
        ("scheduler.kubeconfig", "scheduler"),
        ("kube-proxy.kubeconfig", "kube-proxy"),
        ("kubelet.kubeconfig", "kubelet"),
    ] {
        let path = if file == "admin.kubeconfig" {
            layout.admin_kubeconfig()
        } else {
            dir.join(file)
        };
        write(&path, kubeconfig(&dir, cert))?;
    }
    Ok(())
}

/// A kubeconfig that names the certificate files (static pods mount the pki directory at
/// the same path).
fn kubeconfig(pki: &Path, cert: &str) -> String {
    let p = |f: &str| -> PathBuf { pki.join(f) };
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: enforcer-test
  cluster:
    server: https://{NODE_IP}:{API_PORT}
    certificate-authority: {ca}
users:
- name: {cert}
  user:
    client-certificate: {crt}
    client-key: {key}
contexts:
- name: enforcer-test
  context:
    cluster: enforcer-test
    user: {cert}
current-context: enforcer-test
",
        ca = p("ca.crt").display(),
        crt = p(&format!("{cert}.crt")).display(),
        key = p(&format!("{cert}.key")).display(),
    )
}
