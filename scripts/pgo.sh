#!/usr/bin/env bash
# Writes cmd/push-appserver/default.pgo, the CPU profile `go build` uses
# for profile-guided optimisation of the server (-pgo=auto, the default):
# the server under pushbench on its hot paths, merged into one profile.
# The compiler inlines more where the profile says the time goes, which
# took about a tenth off the instructions of a XEP-0357 push. Run it
# again after changing a hot function: the profile names call sites by
# their line within the function. An old profile still helps, less so,
# and never breaks a build.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
go build -o "$dir/pushbench" ./cmd/pushbench
go build -o "$dir/push-appserver" ./cmd/push-appserver

# One run per phase, as -cpuprofile profiles one: both closed loops, the
# XEP-0357 path at a fixed rate (where wake-ups dominate), and
# registrations (the SQLite writer and net/http's server).
profile() {
  local phase=$1; shift
  echo "pgo: profiling $phase"
  "$dir/pushbench" -bin "$dir/push-appserver" -cpuprofile "$dir/$phase.prof" -profile "$phase" "$@" >"$dir/$phase.log" 2>&1 ||
    { cat "$dir/$phase.log" >&2; exit 1; }
}
profile xmpp -n 20000 -d 12s -open-d 12s
profile http -n 20000 -d 12s -open-d 12s
profile xmpp-rate -n 20000 -d 12s -open-d 12s -paths xmpp
profile registrations -n 150000 -d 2s -open-d 2s -paths xmpp

go tool pprof -proto "$dir"/*.prof >"$dir/merged.pgo" 2>/dev/null
mv "$dir/merged.pgo" cmd/push-appserver/default.pgo
echo "pgo: wrote cmd/push-appserver/default.pgo"
