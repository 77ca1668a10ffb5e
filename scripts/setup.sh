#!/usr/bin/env bash
# Idempotent set-up of a Debian 12 machine (as root) for building tracer, and on request for
# testing it or building a release. A second run only checks and returns in a second or two.
#
#   scripts/setup.sh            what the build needs (cargo xtask drops | image): Debian's LLVM 22
#                               and protoc, rust-src for the nightly (aya-build compiles the eBPF
#                               object with -Z build-std=core), bpf-linker built against LLVM 22
#                               (the crates.io binary would link a different LLVM), nightly
#                               rustfmt and clippy (the style checks of cargo xtask test)
#   scripts/setup.sh --lab      also the test lab (cargo xtask test | vm-test | bench, .ci/run):
#                               containerd, runc, CNI plugins, qemu, prometheus, bpftrace, a
#                               registry and skopeo, kubectl, kubernetes-validate
#   scripts/setup.sh --release  also the release tools (cargo xtask release): static glibc for
#                               amd64 and arm64, the arm64 cross compiler, qemu-user, skopeo
#
# --lab installs containerd and runc: on a Kubernetes node that would replace the node's
# container runtime. Run it on a build or CI machine, never on a node.
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }

LAB=0
RELEASE=0
for arg in "$@"; do
  case "$arg" in
    --lab) LAB=1 ;;
    --release) RELEASE=1 ;;
    *) log "error: unknown argument $arg (use --lab and/or --release)"; exit 2 ;;
  esac
done

BPF_LINKER_VERSION=0.13.0
LLVM=22

# The build: LLVM for bpf-linker, protoc for the CRI client (k8s-cri), a C compiler (ring).
PKGS=("llvm-${LLVM}-dev" "libpolly-${LLVM}-dev" libzstd-dev zlib1g-dev pkg-config protobuf-compiler gcc libc6-dev)
if ((LAB)); then
  PKGS+=(
    # iproute2 for netns/veth/tc, iptables/nftables for drop rules, bpftool to prove clean-up.
    iproute2 iptables nftables conntrack bpftool iperf3 procps python3
    # cargo xtask vm-test: other kernels under qemu (TCG), a busybox initramfs, .ko.xz modules.
    qemu-system-x86 busybox-static xz-utils
    # The node lab: a real containerd with runc and the CNI bridge plugin inside a test network
    # namespace; the registry test pushes the image to a local registry with skopeo and has that
    # containerd pull it.
    containerd runc containernetworking-plugins docker-registry skopeo
    # tracer serve: promtool checks the metrics it serves (its daemon is not started here).
    prometheus
    # tracer job render: manifests are validated with kubernetes-validate, in a venv.
    python3-venv
    # cargo xtask bench: the same drop storm through bpftrace, side by side with tracer.
    bpftrace
  )
fi
if ((RELEASE)); then
  # arm64 cross-compiled against a static glibc; qemu-user runs it once; skopeo reads the OCI
  # layout back; file describes the binaries.
  PKGS+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user skopeo file)
fi

missing=()
installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${PKGS[@]}" 2>/dev/null | awk '$4 == "installed" {print $1}' || true)
for p in "${PKGS[@]}"; do
  grep -qx "$p" <<<"$installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then
    log "error: installing packages needs root"; exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # An old or empty package list makes apt-get install fail to find packages.
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ((LAB)); then
  # Kubernetes manifests (job render, deploy/) are checked against the API's schemas:
  # kubernetes-validate (PyPI) carries them, so the check needs no cluster.
  PYVENV=/opt/tracer-py
  if ! "$PYVENV/bin/kubernetes-validate" --version >/dev/null 2>&1; then
    log "installing kubernetes-validate into $PYVENV"
    /usr/bin/python3 -m venv "$PYVENV"
    "$PYVENV/bin/pip" install -q kubernetes-validate
  fi
  # kubectl runs tracer as a plugin in the tests (`kubectl tracer`); Debian's client will do
  # when the machine has none.
  if ! command -v kubectl >/dev/null 2>&1; then
    log "installing kubectl (Debian kubernetes-client)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null
  fi
fi

# rustup may not be on PATH in non-login shells (CI runs `bash .ci/run`).
if ! command -v rustup >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/rustup" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v rustup >/dev/null || { log "error: rustup not found"; exit 1; }

if ! rustup toolchain list | grep -q '^nightly'; then
  log "installing the nightly toolchain"
  rustup toolchain install nightly --profile minimal
fi
nightly_components=$(rustup component list --toolchain nightly --installed 2>/dev/null)
if ! grep -q '^rust-src' <<<"$nightly_components"; then
  log "adding rust-src to nightly (needed by -Z build-std=core)"
  rustup component add rust-src --toolchain nightly
fi
# `cargo xtask test` checks formatting with nightly rustfmt (rustfmt.toml uses its unstable
# import options) and lints with clippy: stable for the workspace, nightly for tracer-ebpf
# (built like aya-build builds it); a minimal-profile toolchain has neither.
for component in rustfmt clippy; do
  if ! grep -q "^${component}" <<<"$nightly_components"; then
    log "adding ${component} to nightly (the style checks of cargo xtask test)"
    rustup component add "${component}" --toolchain nightly
  fi
done
if ! rustup component list --installed 2>/dev/null | grep -q '^clippy'; then
  log "adding clippy to the default toolchain"
  rustup component add clippy
fi
if ((RELEASE)); then
  # The arm64 standard library for the cross build (amd64's is the host's own).
  if ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
    log "adding the Rust target aarch64-unknown-linux-gnu (the arm64 release binary)"
    rustup target add aarch64-unknown-linux-gnu
  fi
fi

have_linker() {
  command -v bpf-linker >/dev/null 2>&1 && bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"
}
if ! have_linker; then
  log "building bpf-linker $BPF_LINKER_VERSION against LLVM $LLVM (takes about 3 minutes)"
  LLVM_SYS_221_PREFIX=/usr/lib/llvm-${LLVM} LLVM_PREFIX=/usr/lib/llvm-${LLVM} \
    cargo install --locked bpf-linker --version "$BPF_LINKER_VERSION" \
      --no-default-features --features "llvm-${LLVM}" >/dev/null
fi
have_linker || { log "error: bpf-linker $BPF_LINKER_VERSION is not on PATH after install"; exit 1; }

log "ok"
