#!/bin/sh
# Runs every fuzz target of the module for FUZZTIME each (default 30s), one
# after the other (go test fuzzes one target at a time). Inputs that crash
# are written by go test to the package's testdata/fuzz/<target>/, where
# `make test` runs them from then on as regression seeds: commit them with
# the fix. FUZZPARALLEL bounds the fuzzing workers (default: all cores).
set -eu
FUZZTIME=${FUZZTIME:-30s}
GO=${GO:-go}
PARALLEL=${FUZZPARALLEL:+-parallel $FUZZPARALLEL}
failed=""
for pkg in $($GO list ./...); do
	for target in $($GO test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		echo "== $pkg $target ($FUZZTIME)"
		# shellcheck disable=SC2086 # PARALLEL is two words or none
		if ! $GO test -run '^$' -fuzz "^$target\$" -fuzztime "$FUZZTIME" $PARALLEL "$pkg"; then
			failed="$failed $pkg.$target"
		fi
	done
done
if [ -n "$failed" ]; then
	echo "fuzz targets that failed:$failed" >&2
	echo "their crashing inputs are in the packages' testdata/fuzz/ directories" >&2
	exit 1
fi
echo "all fuzz targets ran $FUZZTIME without a failure"
