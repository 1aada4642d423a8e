#!/usr/bin/env bash
# System packages that `make test` needs beyond Python and Node: Chromium and
# ripgrep for the VS Code end-to-end test (code-server), and the toolchains
# the HumanEval-X harness executes generated code with (Go + testify, OpenSSL
# headers for C++ task 162, Boost headers for C++, the rand/regex/md5 crates
# for Rust; bubblewrap for the sandbox's private filesystem view).
# With --bootstrap-sources, also what `acepilot bootstrap` reads as training code
# (docs/acepilot-tiny.md): Go's standard library sources and the Rust crates
# Debian ships, so that a rebuild sees the same corpus as the shipped model.
# Idempotent: installs only what is missing.
# Without root (and without sudo) it prints the command instead and exits 0:
# the tests that need a missing tool say so and are skipped with the reason.
set -euo pipefail

PACKAGES=(
    chromium ripgrep libkrb5-dev nginx
    golang golang-github-stretchr-testify-dev libssl-dev libboost-dev
    librust-rand-dev librust-regex-dev librust-md5-dev
    bubblewrap
)
if [ "${1:-}" = "--bootstrap-sources" ]; then
    PACKAGES+=(
        golang-1.19-src
        librust-anyhow-dev librust-base64-dev librust-bytes-dev librust-chrono-dev
        librust-clap-dev librust-futures-dev librust-hashbrown-dev librust-indexmap-dev
        librust-itertools-dev librust-log-dev librust-md5-dev librust-memchr-dev
        librust-once-cell-dev librust-rand-dev librust-regex-dev librust-serde-dev
        librust-serde-json-dev librust-smallvec-dev librust-syn-dev librust-thiserror-dev
        librust-url-dev
    )
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "acepilot: apt-get not found; install the equivalents of: ${missing[*]}" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "acepilot: missing system packages (tests that need them will be skipped):" >&2
        echo "    sudo apt-get install -y ${missing[*]}" >&2
        exit 0
    fi
fi
echo "acepilot: installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
