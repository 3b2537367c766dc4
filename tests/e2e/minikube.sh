#!/usr/bin/env bash
# End-to-end test of enforcer on a minikube cluster: the same checks as kind.sh (see
# lib.sh), on one minikube node with containerd and the bridge CNI (no NetworkPolicy of its
# own), then the profile is deleted.
#
# NOTE: this cannot run on the project's development and CI machines: they have no
# container engine and no hypervisor access for minikube. Run it on a laptop or a runner.
#
# Needs: minikube, kubectl, a driver (MINIKUBE_DRIVER: docker by default; kvm2 or qemu2 run
# a VM, whose kernel and cgroup tree are the node's own instead of the host's), and the
# image archive from `cargo xtask image`.
# Environment: MINIKUBE_PROFILE (default enforcer-e2e), MINIKUBE_DRIVER, K8S_VERSION
# (default minikube's stable), KEEP=1 keeps the profile.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

PROFILE=${MINIKUBE_PROFILE:-enforcer-e2e}
DRIVER=${MINIKUBE_DRIVER:-docker}
require minikube kubectl realpath

teardown() {
    local rc=$?
    if [ "$KEEP" = 1 ]; then
        log "KEEP=1: profile $PROFILE kept (minikube delete -p $PROFILE)"
    else
        log "deleting profile $PROFILE"
        minikube delete -p "$PROFILE" || true
    fi
    exit "$rc"
}

main() {
    local archive
    archive=$(image_archive)
    trap teardown EXIT
    log "starting minikube ($DRIVER, containerd, bridge CNI)"
    minikube start -p "$PROFILE" --driver="$DRIVER" --container-runtime=containerd \
        --cni=bridge --kubernetes-version="${K8S_VERSION:-stable}" \
        --service-cluster-ip-range=10.96.0.0/12 --wait=all
    kubectl config use-context "$PROFILE"
    # The node must run cgroup v2 and have bpffs at /sys/fs/bpf (see deploy/README.md).
    [ "$(minikube -p "$PROFILE" ssh -- stat -fc %T /sys/fs/cgroup | tr -d '\r')" = cgroup2fs ] ||
        die "the minikube node does not use cgroup v2"
    minikube -p "$PROFILE" ssh -- "sudo sh -c 'mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf'"
    minikube -p "$PROFILE" ssh -- test -r /sys/kernel/btf/vmlinux ||
        die "the minikube node's kernel has no BTF (/sys/kernel/btf/vmlinux)"
    log "loading $archive"
    minikube -p "$PROFILE" image load "$archive"
    run_all_checks
    summary
}

main "$@"
