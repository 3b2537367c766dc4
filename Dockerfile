# syntax=docker/dockerfile:1
# The agent's image: one static `enforcer` binary, FROM scratch.
#
#   docker build -t localhost/enforcer:0.1.0 .
#
# Machines without a container engine build the same image with `cargo xtask image`
# (buildah, no daemon). Both produce an image that runs as root: the agent needs
# capabilities in the host's user namespace (see deploy/README.md).
#
# Toolchain (the same as `cargo xtask setup`): the eBPF programs are Rust built for
# bpfel-unknown-none. Debian 12's security suite ships rustc-web/cargo-web 1.96 with a
# prebuilt `core` for the BPF targets (libstd-rust-web-dev-bpf) and LLVM 22 (llvm-22-dev),
# against which bpf-linker is built. rustup cannot provide `core` for BPF without rust-src,
# so this Debian toolchain builds the BPF object (enforcer-user/build.rs calls
# /usr/bin/cargo), and here, to keep one toolchain in the image, the agent too.
ARG DEBIAN_IMAGE=debian:bookworm

FROM ${DEBIAN_IMAGE} AS build
ARG BPF_LINKER_VERSION=0.13.0
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      rustc-web cargo-web libstd-rust-web-dev-bpf llvm-22-dev \
      gcc libc6-dev ca-certificates \
 && rm -rf /var/lib/apt/lists/*
ENV CARGO_HOME=/usr/local/cargo
ENV PATH=/usr/local/cargo/bin:$PATH
RUN PATH=/usr/lib/llvm-22/bin:$PATH LLVM_PREFIX=/usr/lib/llvm-22 \
    cargo install --locked bpf-linker --version ${BPF_LINKER_VERSION} \
      --no-default-features --features llvm-22
WORKDIR /src
COPY . .
# Static (glibc, static-pie): the final image has no libc. With --target, RUSTFLAGS does
# not reach build scripts and proc macros, and build.rs keeps it out of the BPF build.
RUN RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked \
      --target x86_64-unknown-linux-gnu -p enforcer-user --bin enforcer \
 && install -m 0755 target/x86_64-unknown-linux-gnu/release/enforcer /enforcer \
 && /enforcer --version

FROM scratch
COPY --from=build /enforcer /usr/local/bin/enforcer
ENV PATH=/usr/local/bin
# Root is required (capabilities in the initial user namespace, root-owned bpffs).
USER 0:0
ENTRYPOINT ["/usr/local/bin/enforcer"]
CMD ["--help"]
LABEL org.opencontainers.image.title="enforcer" \
      org.opencontainers.image.description="Node agent enforcing Kubernetes NetworkPolicy and runtime guards with eBPF" \
      org.opencontainers.image.licenses="Apache-2.0 AND (GPL-2.0-only OR Apache-2.0)"
