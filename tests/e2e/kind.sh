#!/usr/bin/env bash
# End-to-end test of enforcer on a kind cluster: create the cluster, load the image, deploy
# deploy/ with kustomize, wait for the DaemonSet, check a NetworkPolicy truth table, an
# agent restart and runtime guards, then delete the cluster.
#
# NOTE: this cannot run on the project's development and CI machines: they have no
# container engine (no Docker, no kind). Run it where Docker works (a laptop, or a hosted
# runner: .github/workflows/e2e.yml).
#
# Needs: docker, kind (>= v0.24), kubectl, and the image archive from `cargo xtask image`
# (target/image/enforcer.docker.tar), or IMAGE_ARCHIVE=... / IMAGE=... already loadable.
# Environment: KIND_CLUSTER (default enforcer-e2e), KIND_NODE_IMAGE (default: kind's),
# E2E_CNI (plain | kindnet, default plain), KEEP=1 keeps the cluster.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

CLUSTER=${KIND_CLUSTER:-enforcer-e2e}
E2E_CNI=${E2E_CNI:-plain}
require docker kind kubectl realpath

teardown() {
    local rc=$?
    if [ "$KEEP" = 1 ]; then
        log "KEEP=1: cluster $CLUSTER kept (kind delete cluster --name $CLUSTER)"
    else
        log "deleting cluster $CLUSTER"
        kind delete cluster --name "$CLUSTER" || true
    fi
    exit "$rc"
}

# A CNI without NetworkPolicy: ptp veths and host-local addresses from each node's podCIDR,
# and routes between the nodes (they share one Docker network). kind ships these plugins.
install_plain_cni() {
    log "installing a plain ptp CNI (no NetworkPolicy of its own)"
    local node cidr ip other ocidr oip i
    for i in $(seq 60); do
        [ -z "$(kubectl get nodes -o jsonpath='{range .items[?(@.spec.podCIDR=="")]}{.metadata.name}{end}')" ] &&
            [ "$(kubectl get nodes --no-headers | wc -l)" -eq "$(kind get nodes --name "$CLUSTER" | wc -l)" ] && break
        [ "$i" -eq 60 ] && die "nodes did not get pod CIDRs"
        sleep 2
    done
    for node in $(kind get nodes --name "$CLUSTER"); do
        cidr=$(kubectl get node "$node" -o jsonpath='{.spec.podCIDR}')
        [ -n "$cidr" ] || die "node $node has no podCIDR"
        docker exec -i "$node" sh -c 'cat > /etc/cni/net.d/10-plain.conflist' <<CNI
{
  "cniVersion": "0.4.0",
  "name": "plain",
  "plugins": [
    {"type": "ptp", "ipMasq": false, "mtu": 1500,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$cidr"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
CNI
        for other in $(kind get nodes --name "$CLUSTER"); do
            [ "$other" = "$node" ] && continue
            ocidr=$(kubectl get node "$other" -o jsonpath='{.spec.podCIDR}')
            oip=$(kubectl get node "$other" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')
            docker exec "$node" ip route replace "$ocidr" via "$oip"
        done
        # Pods reach the outside (image pulls are the node's; this is for completeness).
        ip=$(kubectl get node "$node" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')
        docker exec "$node" sh -c "iptables -t nat -C POSTROUTING -s $cidr ! -d 10.244.0.0/16 -j MASQUERADE 2>/dev/null || iptables -t nat -A POSTROUTING -s $cidr ! -d 10.244.0.0/16 -j MASQUERADE"
        info "$node ($ip): pods $cidr"
    done
    kubectl wait --for=condition=Ready nodes --all --timeout=180s
}

# bpffs on every node: the capability-based DaemonSet needs the host's (here: the kind
# node's) /sys/fs/bpf to be a bpffs mount, as on GKE and any systemd host.
ensure_bpffs() {
    local node
    for node in $(kind get nodes --name "$CLUSTER"); do
        docker exec "$node" sh -c 'mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf'
    done
}

main() {
    if [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]; then
        die "the host must use cgroup v2 (unified hierarchy) for kind nodes"
    fi
    local archive
    archive=$(image_archive)
    log "creating kind cluster $CLUSTER"
    local args=(--name "$CLUSTER" --wait 0s)
    if [ "$E2E_CNI" = plain ]; then
        args+=(--config "$E2E_DIR/kind-config.yaml")
    else
        # kindnet (and its NetworkPolicy) with the same nodes and kubelet settings.
        sed 's/^  disableDefaultCNI: true$/  disableDefaultCNI: false/' "$E2E_DIR/kind-config.yaml" >"$REPO/target/kind-config-kindnet.yaml"
        args+=(--config "$REPO/target/kind-config-kindnet.yaml")
    fi
    if [ -n "${KIND_NODE_IMAGE:-}" ]; then args+=(--image "$KIND_NODE_IMAGE"); fi
    trap teardown EXIT
    kind create cluster "${args[@]}"
    kubectl config use-context "kind-$CLUSTER"
    if [ "$E2E_CNI" = plain ]; then install_plain_cni; fi
    kubectl wait --for=condition=Ready nodes --all --timeout=300s
    ensure_bpffs
    log "loading $archive into the nodes"
    kind load image-archive "$archive" --name "$CLUSTER"
    run_all_checks
    summary
}

main "$@"
