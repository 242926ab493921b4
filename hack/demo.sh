#!/usr/bin/env bash
# make demo: the hello-world journey on a private, temporary Berth.
#
# It starts a loopback registry (Debian's docker-registry) holding the
# hello-world and busybox images, built here from source, and a berthd in a
# temporary root with that registry configured as the mirror for docker.io.
# Then `berthctl run hello-world` twice: the first run pulls, the second
# does not. Everything it started is stopped, and its directory removed.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BERTH_BIN:-$PWD/bin} # the tests point it at the binaries they built
if [ "$(id -u)" != 0 ]; then
	echo "make demo runs berthd as root (it creates namespaces, mounts and cgroups): run 'sudo make demo'" >&2
	exit 1
fi
tmp=$(mktemp -d /tmp/berth-demo.XXXXXX)
sock=$tmp/state/berth.sock
cleanup() {
	if [ -n "${berthd:-}" ]; then
		ids=$("$bin/berthctl" ps --address "$sock" -aq 2>/dev/null || true)
		[ -z "$ids" ] || "$bin/berthctl" rm --address "$sock" -f $ids >/dev/null 2>&1 || true
	fi
	for p in ${berthd:-} ${registry:-}; do
		if kill -0 "$p" 2>/dev/null; then
			kill -TERM "$p"
			wait "$p" 2>/dev/null || true
		fi
	done
	rm -rf "$tmp"
}
trap cleanup EXIT

go build -o "$tmp/demo-registry" ./integration/cmd/demo-registry
mkdir -p "$tmp/registry"
"$tmp/demo-registry" -dir "$tmp/registry" -addr-file "$tmp/registry.addr" >"$tmp/registry.log" 2>&1 &
registry=$!
for _ in $(seq 600); do
	[ -s "$tmp/registry.addr" ] && break
	kill -0 "$registry" 2>/dev/null || { cat "$tmp/registry.log" >&2; exit 1; }
	sleep 0.1
done
addr=$(cat "$tmp/registry.addr")

cat >"$tmp/config.toml" <<TOML
# A private berthd whose docker.io is the loopback registry.
[registry."docker.io"]
mirrors = ["http://$addr"]
TOML
"$bin/berthd" --config "$tmp/config.toml" --root "$tmp/root" --state "$tmp/state" --address "$sock" >"$tmp/berthd.log" 2>&1 &
berthd=$!
for _ in $(seq 100); do
	"$bin/berthctl" -a "$sock" version >/dev/null 2>&1 && break
	sleep 0.1
done

run() {
	echo "\$ berthctl $*"
	# --address right after the command: run takes the rest as the
	# container's command, and -a means other things to ps and start.
	"$bin/berthctl" "$1" --address "$sock" "${@:2}"
	echo
}
echo "A private berthd in $tmp, with a loopback registry at $addr standing in for docker.io."
echo
run version
run run hello-world
run run hello-world
run ps -a
run images
