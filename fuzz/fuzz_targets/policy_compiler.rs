//! The policy compiler on whatever the loader makes of arbitrary manifests: no panic, the
//! same input compiles to the same maps, and every local endpoint is a pod of this node.
#![no_main]

use std::net::IpAddr;

use enforcer::{
    manifests::{Store, load_bytes},
    policy::{CompileInput, Compiler},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut store = Store::new();
    store.apply(load_bytes("fuzz.yaml", data.to_vec()));
    let cluster = store.cluster();
    let node_ips: [IpAddr; 1] = ["192.0.2.1".parse().unwrap()];
    let input = CompileInput {
        cluster,
        node_name: "node-a",
        node_ips: &node_ips,
    };
    let first = Compiler::new().compile(&input);
    let again = Compiler::new().compile(&input);
    assert_eq!(
        format!("{first:?}"),
        format!("{again:?}"),
        "not deterministic"
    );
    for le in first.endpoints.values() {
        let pod = cluster
            .pods
            .get(&le.pod)
            .expect("an endpoint without its pod");
        assert_eq!(pod.node_name.as_deref(), Some("node-a"), "{:?}", le.pod);
    }
});
