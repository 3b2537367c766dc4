//! The watched kinds: how each is requested, decoded, keyed and converted to the model.
//!
//! Objects are converted as they arrive and only the model is kept. Pods are the bulk of a
//! cluster (150,000 in a large one) and carry large fields the agent never reads
//! (managedFields, annotations, env, volumes, conditions, container statuses), so they are
//! decoded into [`PodLite`], a type with only the fields `convert::pod` reads: serde skips
//! the rest without allocating them, which a `.modify(strip)` after a full decode could
//! not avoid.

use std::{borrow::Cow, collections::BTreeMap, fmt::Debug};

use ::kube::{
    Resource,
    api::{ApiResource, DynamicObject},
};
use k8s_openapi::{
    NamespaceResourceScope,
    api::{core::v1 as core, networking::v1 as net},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde::{Deserialize, Deserializer, de::DeserializeOwned};

use super::store::Slot;
use crate::{
    manifests::{
        FieldError,
        convert::{self, DEFAULT_NAMESPACE, MIRROR_ANNOTATION},
    },
    model::{self, ObjectRef},
    runtime_policy::{self, RuntimePolicy},
};

/// One watch of the API server. Pods are watched twice: this node's pods (the endpoints,
/// a small watch that stays fast while the cluster-wide one relists) and every pod (the
/// peers); each pod is kept from exactly one of them (see `store`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Res {
    /// Pods with `spec.nodeName` = this node (field selector).
    LocalPods,
    /// All pods; those of this node are left to [`Res::LocalPods`].
    Pods,
    Namespaces,
    NetworkPolicies,
    /// `runtimepolicies.enforcer.dev`: optional, its CRD may be missing.
    RuntimePolicies,
    Services,
    EndpointSlices,
}

/// Number of watches ([`Res::ALL`]).
pub const WATCHES: usize = 7;

impl Res {
    pub const ALL: [Res; WATCHES] = [
        Res::LocalPods,
        Res::Pods,
        Res::Namespaces,
        Res::NetworkPolicies,
        Res::RuntimePolicies,
        Res::Services,
        Res::EndpointSlices,
    ];

    /// The `resource` label of the `enforcer_kube_*` metrics.
    pub fn name(self) -> &'static str {
        match self {
            Res::LocalPods => "local_pods",
            Res::Pods => "pods",
            Res::Namespaces => "namespaces",
            Res::NetworkPolicies => "networkpolicies",
            Res::RuntimePolicies => "runtimepolicies",
            Res::Services => "services",
            Res::EndpointSlices => "endpointslices",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// When two watches hold an object of the same key (a pod), the higher one wins.
    pub fn priority(self) -> u8 {
        match self {
            Res::LocalPods => 1,
            _ => 0,
        }
    }

    /// A resource whose absence (404 on list: CRD not installed) means "no objects".
    pub fn optional(self) -> bool {
        self == Res::RuntimePolicies
    }
}

impl std::fmt::Display for Res {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The RuntimePolicy custom resource (`enforcer.dev/v1alpha1`, namespaced).
pub fn runtime_policy_resource() -> ApiResource {
    ApiResource {
        group: "enforcer.dev".into(),
        version: "v1alpha1".into(),
        api_version: "enforcer.dev/v1alpha1".into(),
        kind: "RuntimePolicy".into(),
        plural: "runtimepolicies".into(),
    }
}

/// `namespace/name` of a namespaced object, as the converters key it (a missing namespace is
/// `default`).
pub fn object_ref(meta: &ObjectMeta) -> ObjectRef {
    ObjectRef {
        namespace: meta
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
        name: meta.name.clone().unwrap_or_default(),
    }
}

/// An object decoded from the API server, as the watch task sees it.
pub trait Watched: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static {
    type Model: Slot;
    /// The model key (also for deletions, whose object may be invalid).
    fn key(&self) -> <Self::Model as Slot>::Key;
    /// Validate and convert, consuming the object.
    fn into_model(self) -> Result<Self::Model, Vec<FieldError>>;
    /// `spec.nodeName` (pods only): which pod watch the object belongs to.
    fn node_name(&self) -> Option<&str> {
        None
    }
}

impl Watched for core::Namespace {
    type Model = model::Namespace;
    fn key(&self) -> String {
        self.metadata.name.clone().unwrap_or_default()
    }
    fn into_model(self) -> Result<model::Namespace, Vec<FieldError>> {
        convert::namespace(&self)
    }
}

impl Watched for net::NetworkPolicy {
    type Model = model::NetworkPolicy;
    fn key(&self) -> ObjectRef {
        object_ref(&self.metadata)
    }
    /// Never refused: a policy the API server accepted but the agent cannot convert is
    /// enforced fail-closed (its errors travel in the model and the agent reports them).
    fn into_model(self) -> Result<model::NetworkPolicy, Vec<FieldError>> {
        Ok(convert::network_policy_fail_closed(&self).0)
    }
}

impl Watched for core::Service {
    type Model = model::Service;
    fn key(&self) -> ObjectRef {
        object_ref(&self.metadata)
    }
    fn into_model(self) -> Result<model::Service, Vec<FieldError>> {
        convert::service(&self)
    }
}

impl Watched for k8s_openapi::api::discovery::v1::EndpointSlice {
    type Model = model::EndpointSlice;
    fn key(&self) -> ObjectRef {
        object_ref(&self.metadata)
    }
    fn into_model(self) -> Result<model::EndpointSlice, Vec<FieldError>> {
        convert::endpoint_slice(&self)
    }
}

impl Watched for DynamicObject {
    type Model = RuntimePolicy;
    fn key(&self) -> ObjectRef {
        object_ref(&self.metadata)
    }
    fn into_model(self) -> Result<RuntimePolicy, Vec<FieldError>> {
        let key = object_ref(&self.metadata);
        // `data` holds every field but apiVersion, kind and metadata: what `convert` reads.
        runtime_policy::convert(&key.namespace, &key.name, &self.data)
    }
}

impl Watched for PodLite {
    type Model = model::Pod;
    fn key(&self) -> ObjectRef {
        object_ref(&self.metadata)
    }
    fn into_model(self) -> Result<model::Pod, Vec<FieldError>> {
        convert::pod(&self.into_pod())
    }
    fn node_name(&self) -> Option<&str> {
        self.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty())
    }
}

/// A Pod with only what the model needs: metadata (name, namespace, uid, labels,
/// resourceVersion, the mirror annotation of static pods), `spec.nodeName`, `spec.hostNetwork`, the containers' and init
/// containers' names, ports and restartPolicy, and `status.phase`, `status.podIP(s)`.
/// Everything else is skipped while decoding.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PodLite {
    #[serde(default, deserialize_with = "lean_meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<PodSpecLite>,
    #[serde(default)]
    pub status: Option<PodStatusLite>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpecLite {
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub host_network: Option<bool>,
    #[serde(default)]
    pub containers: Option<Vec<ContainerLite>>,
    #[serde(default)]
    pub init_containers: Option<Vec<ContainerLite>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerLite {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub ports: Option<Vec<core::ContainerPort>>,
    /// `Always` on an init container makes it a sidecar, whose named ports count.
    #[serde(default)]
    pub restart_policy: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct PodStatusLite {
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default, rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(default, rename = "podIPs")]
    pub pod_ips: Option<Vec<core::PodIP>>,
}

/// The metadata fields the agent reads; managedFields, ownerReferences, annotations other
/// than a static pod's config hash, ... are skipped.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeanMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    annotations: Option<LeanAnnotations>,
}

/// The one annotation the agent reads; all others are skipped without being stored.
#[derive(Deserialize)]
struct LeanAnnotations {
    #[serde(default, rename = "kubernetes.io/config.mirror")]
    mirror: Option<String>,
}

fn lean_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = LeanMeta::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        labels: m.labels,
        annotations: m
            .annotations
            .and_then(|a| a.mirror)
            .map(|h| BTreeMap::from([(MIRROR_ANNOTATION.to_string(), h)])),
        ..ObjectMeta::default()
    })
}

impl ContainerLite {
    fn into_container(self) -> core::Container {
        core::Container {
            name: self.name,
            ports: self.ports,
            restart_policy: self.restart_policy,
            ..core::Container::default()
        }
    }
}

impl PodLite {
    /// Whether `spec.nodeName` is `node`.
    pub fn node_name_is(&self, node: &str) -> bool {
        self.node_name() == Some(node)
    }

    /// The k8s-openapi Pod holding exactly these fields, for `convert::pod` (so that field
    /// paths in errors are those of the real object: containers keep their indices).
    pub fn into_pod(self) -> core::Pod {
        let spec = self.spec.map(|s| core::PodSpec {
            node_name: s.node_name,
            host_network: s.host_network,
            containers: s
                .containers
                .into_iter()
                .flatten()
                .map(ContainerLite::into_container)
                .collect(),
            init_containers: s
                .init_containers
                .map(|l| l.into_iter().map(ContainerLite::into_container).collect()),
            ..core::PodSpec::default()
        });
        let status = self.status.map(|s| core::PodStatus {
            phase: s.phase,
            pod_ip: s.pod_ip,
            pod_ips: s.pod_ips,
            ..core::PodStatus::default()
        });
        core::Pod {
            metadata: self.metadata,
            spec,
            status,
        }
    }
}

impl Resource for PodLite {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Pod".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "pods".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A pod as the API server sends it, with the heavy fields a real one carries.
    fn heavy_pod() -> serde_json::Value {
        let big = "x".repeat(64 * 1024);
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "web-0", "namespace": "shop", "uid": "0b7c6f0e-1",
                "resourceVersion": "42", "generateName": "web-",
                "labels": {"app": "web", "tier": "front"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": big},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "u"}],
                "managedFields": [{"manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1",
                                   "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}}}}}],
                "finalizers": ["x/y"]
            },
            "spec": {
                "nodeName": "node-a",
                "hostNetwork": false,
                "volumes": [{"name": "data", "configMap": {"name": "cm"}}],
                "containers": [
                    {"name": "app", "image": "nginx", "env": [{"name": "BIG", "value": big}],
                     "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                               {"containerPort": 9090}],
                     "resources": {"limits": {"cpu": "1"}}},
                    {"name": "metrics", "image": "exporter",
                     "ports": [{"name": "metrics", "containerPort": 9100}]}
                ],
                "initContainers": [
                    {"name": "setup", "image": "busybox", "ports": [{"name": "ignored", "containerPort": 1}]},
                    {"name": "proxy", "image": "envoy", "restartPolicy": "Always",
                     "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"}]}
                ]
            },
            "status": {
                "phase": "Running",
                "podIP": "10.0.0.5",
                "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}],
                "conditions": [{"type": "Ready", "status": "True", "message": big}],
                "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "image": "nginx", "imageID": "sha"}]
            }
        })
    }

    #[test]
    fn lean_pods_skip_what_the_model_does_not_read() {
        let value = heavy_pod();
        let lite: PodLite = serde_json::from_value(value.clone()).unwrap();
        let m = &lite.metadata;
        assert_eq!(m.name.as_deref(), Some("web-0"));
        assert_eq!(m.resource_version.as_deref(), Some("42"));
        assert!(m.annotations.is_none() && m.managed_fields.is_none());
        let mirror = serde_json::json!({"metadata": {"name": "m", "uid": "u",
            "annotations": {"kubernetes.io/config.mirror": "abc", "big": "x".repeat(4096)}}});
        let lite_mirror: PodLite = serde_json::from_value(mirror).unwrap();
        assert_eq!(
            lite_mirror.metadata.annotations,
            Some(BTreeMap::from([(
                MIRROR_ANNOTATION.to_string(),
                "abc".to_string()
            )])),
            "only the mirror annotation is kept"
        );
        assert!(m.owner_references.is_none() && m.finalizers.is_none());
        assert!(m.generate_name.is_none());
        let pod = lite.clone().into_pod();
        let spec = pod.spec.as_ref().unwrap();
        assert!(spec.volumes.is_none());
        assert!(
            spec.containers
                .iter()
                .all(|c| c.env.is_none() && c.image.is_none() && c.resources.is_none())
        );
        let status = pod.status.as_ref().unwrap();
        assert!(status.conditions.is_none() && status.container_statuses.is_none());
        // What is kept is small: the debug rendering holds none of the 64 KiB strings.
        assert!(format!("{lite:?}").len() < 4096);

        // And the model is exactly what the full object converts to.
        let full: core::Pod = serde_json::from_value(value).unwrap();
        let expected = convert::pod(&full).unwrap();
        assert_eq!(lite.into_model().unwrap(), expected);
        assert_eq!(
            expected.named_ports.len(),
            3,
            "http, metrics, and the sidecar's dns"
        );
    }

    #[test]
    fn lean_pods_convert_like_full_pods() {
        let cases = [
            json!({"metadata": {"name": "a", "namespace": "n", "uid": "u1"}}),
            json!({"metadata": {"name": "a", "uid": "u1"}, "spec": {"containers": []}}),
            json!({"metadata": {"name": "h", "namespace": "n", "uid": "u2"},
                   "spec": {"hostNetwork": true, "nodeName": "n1", "containers": [{"name": "c"}]},
                   "status": {"podIP": "192.168.1.7", "phase": "Pending"}}),
            json!({"metadata": {"name": "done", "namespace": "n", "uid": "u3"},
                   "spec": {"containers": [{"name": "c"}]},
                   "status": {"phase": "Succeeded", "podIPs": [{"ip": "10.1.1.1"}]}}),
            // Invalid: a bad port name, a port out of range, an address that is not one.
            json!({"metadata": {"name": "bad", "namespace": "n", "uid": "u4"},
                   "spec": {"containers": [{"name": "c", "ports": [
                        {"name": "Not_Valid", "containerPort": 80},
                        {"name": "ok", "containerPort": 0}]}]},
                   "status": {"podIPs": [{"ip": "10.0.0.300"}]}}),
            // Missing uid.
            json!({"metadata": {"name": "nouid", "namespace": "n"}}),
            // The mirror pod of a static pod: the config hash names its cgroup.
            json!({"metadata": {"name": "etcd-n1", "namespace": "kube-system", "uid": "u5",
                                "annotations": {"kubernetes.io/config.mirror": "2f1c44285aa441ea22ffa411d99649c1",
                                                "kubernetes.io/config.hash": "2f1c44285aa441ea22ffa411d99649c1",
                                                "other": "x".repeat(10_000)}},
                   "spec": {"hostNetwork": true, "nodeName": "n1", "containers": [{"name": "etcd"}]}}),
        ];
        for value in cases {
            let full: core::Pod = serde_json::from_value(value.clone()).unwrap();
            let lite: PodLite = serde_json::from_value(value.clone()).unwrap();
            assert_eq!(lite.key(), object_ref(&full.metadata));
            assert_eq!(lite.into_model(), convert::pod(&full), "{value}");
        }
    }

    #[test]
    fn runtime_policies_convert_from_dynamic_objects() {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "enforcer.dev/v1alpha1", "kind": "RuntimePolicy",
            "metadata": {"name": "lock", "namespace": "shop", "resourceVersion": "7"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "guards": [{"name": "mount"}]}
        }))
        .unwrap();
        assert_eq!(
            obj.key(),
            ObjectRef {
                namespace: "shop".into(),
                name: "lock".into()
            }
        );
        let rp = obj.into_model().unwrap();
        assert_eq!(rp.enforce, enforcer_common::GUARD_MOUNT);
        assert_eq!((rp.namespace.as_str(), rp.name.as_str()), ("shop", "lock"));
    }
}
