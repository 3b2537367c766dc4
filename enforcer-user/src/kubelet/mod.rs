//! kubelet cgroup layouts: pod and container cgroup discovery and watching.
