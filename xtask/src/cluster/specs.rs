//! Configuration files and manifests of the cluster's components (text, no side effects).

use super::{
    API_PORT, CLUSTER_CIDR, DNS_SERVICE_IP, Layout, NODE_IP, NODE_NAME, POD_CIDR, ProxyMode,
    SERVICE_CIDR, build::Bins, images,
};

pub fn containerd_config(l: &Layout) -> String {
    format!(
        r#"version = 2
root = "{root}"
state = "{run}/containerd"

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{state}/containerd-opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # Pod network namespaces are mounted below the state directory, not /var/run/netns.
  netns_mounts_under_state_dir = true
  # The sandbox these machines run in lacks CAP_SYS_RESOURCE, so no process may lower its
  # oom_score_adj: clamp the kubelet's negative scores (system-node-critical pods) to
  # containerd's own instead of failing every such container.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        Root = "{run}/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{state}/cni/net.d"
"#,
        root = l.containerd_root().display(),
        run = l.run.display(),
        sock = l.containerd_sock().display(),
        state = l.state.display(),
        pause = images::pause_image(),
    )
}

/// The pod network: one routed veth per pod (CNI `ptp`), addresses from `host-local`.
pub fn cni_conflist(l: &Layout) -> String {
    serde_json::to_string_pretty(&serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "enforcer-test",
        "plugins": [
            {
                "type": "ptp",
                "mtu": 1500,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "dataDir": l.state.join("cni/ipam").display().to_string(),
                    "ranges": [[{"subnet": POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    }))
    .expect("static JSON")
}

pub fn kubelet_config(l: &Layout) -> String {
    let pki = l.pki();
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {NODE_IP}
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: {ca}
authorization:
  mode: Webhook
# This host has cgroup v1 controllers (and a cgroup2 mount at /sys/fs/cgroup/unified that
# runc joins as well): Kubernetes 1.34 still runs there when told not to fail.
cgroupDriver: cgroupfs
failCgroupV1: false
cgroupsPerQOS: true
clusterDNS: [{DNS_SERVICE_IP}]
clusterDomain: cluster.local
containerRuntimeEndpoint: unix://{sock}
staticPodPath: {manifests}
podLogsDir: {state}/pod-logs
resolvConf: {state}/resolv.conf
tlsCertFile: {pki}/kubelet-serving.crt
tlsPrivateKeyFile: {pki}/kubelet-serving.key
rotateCertificates: false
failSwapOn: false
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
fileCheckFrequency: 5s
syncFrequency: 10s
runtimeRequestTimeout: 2m
serializeImagePulls: false
# Imported images are never garbage-collected (nothing could pull them again), and a
# nearly full disk on a test machine must not evict the control plane.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 50Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
"#,
        ca = pki.join("ca.crt").display(),
        pki = pki.display(),
        sock = l.containerd_sock().display(),
        manifests = l.manifests().display(),
        state = l.state.display(),
    )
}

pub fn kube_proxy_config(l: &Layout, mode: ProxyMode) -> String {
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {kubeconfig}
hostnameOverride: {NODE_NAME}
mode: {mode}
clusterCIDR: {CLUSTER_CIDR}
bindAddress: {NODE_IP}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
# Leave the machine-wide conntrack sysctls alone (the node is a network namespace).
conntrack:
  maxPerCore: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
"#,
        kubeconfig = l.pki().join("kube-proxy.kubeconfig").display(),
        mode = mode.as_str(),
    )
}

/// A static pod of the control plane: host network, the pki directory mounted at the same
/// path, a liveness probe as kubeadm sets one.
fn static_pod(
    name: &str,
    image: &str,
    command: Vec<String>,
    probe: (&str, u16, &str),
    extra_volumes: &[(&str, String, &str)],
    l: &Layout,
) -> String {
    let pki = l.pki().display().to_string();
    let mut mounts = format!("    - name: pki\n      mountPath: {pki}\n      readOnly: true\n");
    let mut volumes =
        format!("  - name: pki\n    hostPath:\n      path: {pki}\n      type: Directory\n");
    for (vname, path, mount) in extra_volumes {
        mounts.push_str(&format!("    - name: {vname}\n      mountPath: {mount}\n"));
        volumes.push_str(&format!(
            "  - name: {vname}\n    hostPath:\n      path: {path}\n      type: DirectoryOrCreate\n"
        ));
    }
    let cmd: String = command
        .iter()
        .map(|a| format!("    - {}\n", serde_json::to_string(a).unwrap()))
        .collect();
    let (host, port, scheme) = probe;
    let path = if scheme == "HTTPS" && name == "kube-apiserver" {
        "/livez"
    } else if name == "etcd" {
        "/health"
    } else {
        "/healthz"
    };
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: kube-system
  labels:
    component: {name}
    tier: control-plane
spec:
  hostNetwork: true
  priorityClassName: system-node-critical
  securityContext:
    seccompProfile:
      type: RuntimeDefault
  containers:
  - name: {name}
    image: {image}
    imagePullPolicy: IfNotPresent
    command:
{cmd}    livenessProbe:
      httpGet:
        host: {host}
        port: {port}
        path: {path}
        scheme: {scheme}
      initialDelaySeconds: 10
      periodSeconds: 10
      timeoutSeconds: 15
      failureThreshold: 8
    resources:
      requests:
        cpu: 100m
    volumeMounts:
{mounts}  volumes:
{volumes}"#
    )
}

fn flags(bin: &str, f: &[(&str, String)]) -> Vec<String> {
    std::iter::once(bin.to_string())
        .chain(f.iter().map(|(k, v)| format!("--{k}={v}")))
        .collect()
}

/// The control plane as static pods: (file name, manifest).
pub fn static_pods(l: &Layout) -> Vec<(String, String)> {
    let pki = l.pki();
    let p = |f: &str| pki.join(f).display().to_string();
    let etcd = static_pod(
        "etcd",
        &images::etcd_image(),
        flags(
            "/usr/local/bin/etcd",
            &[
                ("name", NODE_NAME.into()),
                ("data-dir", "/var/lib/etcd".into()),
                ("listen-client-urls", "http://127.0.0.1:2379".into()),
                ("advertise-client-urls", "http://127.0.0.1:2379".into()),
                ("listen-peer-urls", "http://127.0.0.1:2380".into()),
                (
                    "initial-advertise-peer-urls",
                    "http://127.0.0.1:2380".into(),
                ),
                (
                    "initial-cluster",
                    format!("{NODE_NAME}=http://127.0.0.1:2380"),
                ),
                ("listen-metrics-urls", "http://127.0.0.1:2381".into()),
                ("log-level", "warn".into()),
                // A test cluster: its data is thrown away with it.
                ("unsafe-no-fsync", "true".into()),
            ],
        ),
        ("127.0.0.1", 2381, "HTTP"),
        &[(
            "data",
            l.state.join("etcd").display().to_string(),
            "/var/lib/etcd",
        )],
        l,
    );
    let apiserver = static_pod(
        "kube-apiserver",
        &images::control_plane_image("kube-apiserver"),
        flags(
            "/usr/local/bin/kube-apiserver",
            &[
                ("advertise-address", NODE_IP.into()),
                ("bind-address", "0.0.0.0".into()),
                ("secure-port", API_PORT.to_string()),
                ("etcd-servers", "http://127.0.0.1:2379".into()),
                ("service-cluster-ip-range", SERVICE_CIDR.into()),
                ("client-ca-file", p("ca.crt")),
                ("tls-cert-file", p("apiserver.crt")),
                ("tls-private-key-file", p("apiserver.key")),
                (
                    "kubelet-client-certificate",
                    p("apiserver-kubelet-client.crt"),
                ),
                ("kubelet-client-key", p("apiserver-kubelet-client.key")),
                ("kubelet-certificate-authority", p("ca.crt")),
                ("kubelet-preferred-address-types", "InternalIP".into()),
                (
                    "service-account-issuer",
                    "https://kubernetes.default.svc.cluster.local".into(),
                ),
                ("service-account-key-file", p("sa.pub")),
                ("service-account-signing-key-file", p("sa.key")),
                ("authorization-mode", "Node,RBAC".into()),
                ("enable-admission-plugins", "NodeRestriction".into()),
                ("allow-privileged", "true".into()),
                ("profiling", "false".into()),
                ("v", "1".into()),
            ],
        ),
        (NODE_IP, API_PORT, "HTTPS"),
        &[],
        l,
    );
    let kcm = static_pod(
        "kube-controller-manager",
        &images::control_plane_image("kube-controller-manager"),
        flags(
            "/usr/local/bin/kube-controller-manager",
            &[
                ("kubeconfig", p("controller-manager.kubeconfig")),
                (
                    "authentication-kubeconfig",
                    p("controller-manager.kubeconfig"),
                ),
                (
                    "authorization-kubeconfig",
                    p("controller-manager.kubeconfig"),
                ),
                ("bind-address", "127.0.0.1".into()),
                ("service-account-private-key-file", p("sa.key")),
                ("root-ca-file", p("ca.crt")),
                ("cluster-signing-cert-file", p("ca.crt")),
                ("cluster-signing-key-file", p("ca.key")),
                ("use-service-account-credentials", "true".into()),
                ("controllers", "*,bootstrapsigner,tokencleaner".into()),
                ("allocate-node-cidrs", "true".into()),
                ("cluster-cidr", CLUSTER_CIDR.into()),
                ("node-cidr-mask-size", "24".into()),
                ("service-cluster-ip-range", SERVICE_CIDR.into()),
                ("leader-elect", "false".into()),
                ("profiling", "false".into()),
            ],
        ),
        ("127.0.0.1", 10257, "HTTPS"),
        &[],
        l,
    );
    let scheduler = static_pod(
        "kube-scheduler",
        &images::control_plane_image("kube-scheduler"),
        flags(
            "/usr/local/bin/kube-scheduler",
            &[
                ("kubeconfig", p("scheduler.kubeconfig")),
                ("authentication-kubeconfig", p("scheduler.kubeconfig")),
                ("authorization-kubeconfig", p("scheduler.kubeconfig")),
                ("bind-address", "127.0.0.1".into()),
                ("leader-elect", "false".into()),
                ("profiling", "false".into()),
            ],
        ),
        ("127.0.0.1", 10259, "HTTPS"),
        &[],
        l,
    );
    vec![
        ("etcd.yaml".into(), etcd),
        ("kube-apiserver.yaml".into(), apiserver),
        ("kube-controller-manager.yaml".into(), kcm),
        ("kube-scheduler.yaml".into(), scheduler),
    ]
}

/// CoreDNS as kubeadm installs it (service account and RBAC, Corefile, Deployment, the
/// kube-dns Service). No upstream resolver exists in the node's network namespace, so the
/// Corefile serves the cluster zones only.
pub fn coredns() -> String {
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata:
  name: coredns
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:coredns
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:coredns
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:coredns
subjects:
- kind: ServiceAccount
  name: coredns
  namespace: kube-system
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: coredns
  namespace: kube-system
data:
  Corefile: |
    .:53 {{
        errors
        health {{
           lameduck 5s
        }}
        ready
        kubernetes cluster.local in-addr.arpa ip6.arpa {{
           pods insecure
           fallthrough in-addr.arpa ip6.arpa
           ttl 30
        }}
        prometheus :9153
        cache 30
        loop
        reload
        loadbalance
    }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels:
    k8s-app: kube-dns
spec:
  replicas: 1
  selector:
    matchLabels:
      k8s-app: kube-dns
  template:
    metadata:
      labels:
        k8s-app: kube-dns
    spec:
      priorityClassName: system-cluster-critical
      serviceAccountName: coredns
      dnsPolicy: Default
      nodeSelector:
        kubernetes.io/os: linux
      containers:
      - name: coredns
        image: {image}
        imagePullPolicy: IfNotPresent
        args: ["-conf", "/etc/coredns/Corefile"]
        ports:
        - {{name: dns, containerPort: 53, protocol: UDP}}
        - {{name: dns-tcp, containerPort: 53, protocol: TCP}}
        - {{name: metrics, containerPort: 9153, protocol: TCP}}
        livenessProbe:
          httpGet: {{path: /health, port: 8080, scheme: HTTP}}
          initialDelaySeconds: 60
          timeoutSeconds: 5
          failureThreshold: 5
        readinessProbe:
          httpGet: {{path: /ready, port: 8181, scheme: HTTP}}
        resources:
          limits: {{memory: 170Mi}}
          requests: {{cpu: 100m, memory: 70Mi}}
        securityContext:
          allowPrivilegeEscalation: false
          capabilities:
            add: [NET_BIND_SERVICE]
            drop: [ALL]
          readOnlyRootFilesystem: true
          seccompProfile:
            type: RuntimeDefault
        volumeMounts:
        - {{name: config-volume, mountPath: /etc/coredns, readOnly: true}}
      volumes:
      - name: config-volume
        configMap:
          name: coredns
          items:
          - {{key: Corefile, path: Corefile}}
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels:
    k8s-app: kube-dns
    kubernetes.io/name: CoreDNS
spec:
  selector:
    k8s-app: kube-dns
  clusterIP: {DNS_SERVICE_IP}
  ports:
  - {{name: dns, port: 53, protocol: UDP}}
  - {{name: dns-tcp, port: 53, protocol: TCP}}
  - {{name: metrics, port: 9153, protocol: TCP}}
"#,
        image = images::coredns_image(),
    )
}

/// `kubectl` for users and tests: enters the node's network namespace, admin credentials.
pub fn kubectl_wrapper(l: &Layout, bins: &Bins) -> String {
    format!(
        "#!/bin/sh\n# Written by cargo xtask cluster up.\nexec nsenter --net=/run/netns/{netns} -- {kubectl} --kubeconfig {kc} \"$@\"\n",
        netns = super::NETNS,
        kubectl = bins.path("kubectl").display(),
        kc = l.admin_kubeconfig().display(),
    )
}
