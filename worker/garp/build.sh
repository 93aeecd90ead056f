#!/usr/bin/env bash
# Builds the gateway agent's ARP announcer (main.go here, Go's standard library only) into the
# cache, keyed by its source, and prints its path; a second run is a no-op.
#   ${NATFLOW_CACHE:-$HOME/.cache/natflow}/garp/<source hash>/garp
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
key="$(cat "$here/main.go" "$here/go.mod" | sha256sum | cut -c1-16)"
out="${NATFLOW_CACHE:-$HOME/.cache/natflow}/garp/$key/garp"
if [ ! -x "$out" ]; then
  mkdir -p "$(dirname "$out")"
  (cd "$here" && CGO_ENABLED=0 GOFLAGS= go build -trimpath -buildvcs=false -ldflags="-s -w" -o "$out.tmp" .) >&2
  mv "$out.tmp" "$out"
fi
echo "$out"
