#!/usr/bin/env bash
# Provides a kube-apiserver binary for the end-to-end test and prints its path on stdout (and
# nothing else there; progress goes to stderr).
#
# In order:
#   1. $KUBE_APISERVER, when set (must be executable);
#   2. $E2E_CACHE_DIR/bin/kube-apiserver, left by an earlier build;
#   3. a build from Debian bookworm's `kubernetes` source package (1.20.2, fully vendored), which
#      needs root on Debian: adds a deb-src entry for bookworm main when none exists, installs
#      golang-go, dpkg-dev and rsync, fetches the source with `apt-get source`, places it at
#      $GOPATH/src/k8s.io/kubernetes (GOPATH=$E2E_CACHE_DIR/gopath) and runs
#      `GO111MODULE=off CGO_ENABLED=0 make WHAT=cmd/kube-apiserver` (4-8 minutes on 2 cores).
#      The binary is then copied to $E2E_CACHE_DIR/bin, so that the next run reuses it.
#
# E2E_CACHE_DIR defaults to ${XDG_CACHE_HOME:-$HOME/.cache}/metrics-server-e2e.
set -euo pipefail

log() { printf '[build-apiserver] %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

cache_dir="${E2E_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/metrics-server-e2e}"
cached="$cache_dir/bin/kube-apiserver"

if [[ -n "${KUBE_APISERVER:-}" ]]; then
    [[ -x "$KUBE_APISERVER" ]] || die "KUBE_APISERVER=$KUBE_APISERVER is not an executable file"
    log "using KUBE_APISERVER=$KUBE_APISERVER"
    printf '%s\n' "$KUBE_APISERVER"
    exit 0
fi
if [[ -x "$cached" ]]; then
    log "using the cached build $cached"
    printf '%s\n' "$cached"
    exit 0
fi

[[ "$(id -u)" == 0 ]] || die "building kube-apiserver installs Debian packages: run as root, or set KUBE_APISERVER"
command -v apt-get >/dev/null || die "no apt-get: building kube-apiserver needs Debian bookworm, or set KUBE_APISERVER"

export DEBIAN_FRONTEND=noninteractive
updated=""
apt_update_once() {
    if [[ -z "$updated" ]]; then
        apt-get update -qq >&2
        updated=yes
    fi
}

# A deb-src entry for bookworm main, in deb822 form, unless one is already configured.
has_deb_src() {
    grep -qsE '^[[:space:]]*deb-src[[:space:]].*bookworm' /etc/apt/sources.list /etc/apt/sources.list.d/*.list && return 0
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f "$f" ]] || continue
        # A stanza whose Types include deb-src and whose Suites include bookworm.
        awk 'BEGIN { RS=""; found=0 }
             /(^|\n)Types:[^\n]*deb-src/ && /(^|\n)Suites:[^\n]*bookworm([[:space:]]|$)/ && !/(^|\n)Enabled:[[:space:]]*no/ { found=1 }
             END { exit !found }' "$f" && return 0
    done
    return 1
}
if ! has_deb_src; then
    log "adding a deb-src entry for bookworm main"
    cat >/etc/apt/sources.list.d/metrics-server-e2e-src.sources <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    updated=""
fi

missing=()
command -v go >/dev/null || missing+=(golang-go)
command -v dpkg-source >/dev/null || missing+=(dpkg-dev)
command -v rsync >/dev/null || missing+=(rsync)
command -v make >/dev/null || missing+=(make)
if ((${#missing[@]})); then
    apt_update_once
    log "installing ${missing[*]}"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

export GOPATH="$cache_dir/gopath"
tree="$GOPATH/src/k8s.io/kubernetes"
if [[ ! -f "$tree/Makefile" ]]; then
    src="$cache_dir/source"
    rm -rf "$src"
    mkdir -p "$src" "$(dirname "$tree")"
    apt_update_once
    log "fetching the kubernetes source package"
    (cd "$src" && apt-get source -qq kubernetes >&2)
    unpacked="$(find "$src" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n 1)"
    [[ -n "$unpacked" && -f "$unpacked/Makefile" ]] || die "apt-get source kubernetes left no source tree in $src"
    rm -rf "$tree"
    mv "$unpacked" "$tree"
    rm -rf "$src"
fi

log "building cmd/kube-apiserver in $tree (several minutes)"
started=$SECONDS
(cd "$tree" && GO111MODULE=off CGO_ENABLED=0 make WHAT=cmd/kube-apiserver >&2)
built="$tree/_output/bin/kube-apiserver"
[[ -x "$built" ]] || built="$(find "$tree/_output" -type f -name kube-apiserver -perm -u+x | head -n 1)"
[[ -n "$built" ]] || die "the build left no kube-apiserver under $tree/_output"
log "built in $((SECONDS - started)) s"
mkdir -p "$cache_dir/bin"
cp "$built" "$cached.partial"
mv "$cached.partial" "$cached"
printf '%s\n' "$cached"
