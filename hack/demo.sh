#!/usr/bin/env bash
# make demo: start a private berthd in a temporary root, show what it is,
# and stop it again. Nothing outside the temporary directory is touched.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/bin
if [ "$(id -u)" != 0 ]; then
	echo "make demo runs berthd as root (it creates namespaces, mounts and cgroups): run 'sudo make demo'" >&2
	exit 1
fi
tmp=$(mktemp -d /tmp/berth-demo.XXXXXX)
sock=$tmp/state/berth.sock
log=$tmp/berthd.log
cleanup() {
	if [ -n "${pid:-}" ] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid"
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

"$bin/berthd" --root "$tmp/root" --state "$tmp/state" --address "$sock" >"$log" 2>&1 &
pid=$!
for _ in $(seq 100); do
	"$bin/berthctl" -a "$sock" version >/dev/null 2>&1 && break
	sleep 0.1
done
run() {
	echo "\$ berthctl $*"
	"$bin/berthctl" -a "$sock" "$@"
	echo
}
run version
run info
run namespace ls
echo "(berthd log: $(wc -l <"$log") lines; stopping it)"
