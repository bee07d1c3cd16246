#!/usr/bin/env bash
# Builds the Debian package (target/debian/xdpvs_*.deb) and checks it:
#   1. cargo build --release --bin xdpvs
#   2. man pages and bash/zsh/fish completions from the CLI definition
#      (`xdpvs generate`, hidden) into target/package-assets/
#   3. cargo deb (installs cargo-deb, pinned, when missing)
#   4. the .deb holds the expected files; the unit passes
#      `systemd-analyze verify` against the extracted package; the shipped
#      config passes `xdpvs check`
#   5. as root with iproute2: `xdpvs run` starts, answers `list` and
#      `reload`, and stops as an unprivileged user holding only the unit's
#      AmbientCapabilities (in a network namespace of its own, ~10 s)
# Any failure exits non-zero with the reason. packaging/README.md describes
# the package.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
target=${CARGO_TARGET_DIR:-target}
assets=$target/package-assets
passed=0
skipped=0
fail() {
    echo "package.sh: FAIL: $*" >&2
    echo "package: $passed passed, 1 failed"
    exit 1
}
step() { echo "package.sh: $*" >&2; }
ok() {
    passed=$((passed + 1))
    step "ok: $*"
}

step "building xdpvs (release)"
cargo build --release --bin xdpvs
bin=$target/release/xdpvs

step "generating man pages and completions into $assets"
rm -rf "$assets"
"$bin" generate man "$assets/man" >/dev/null
for shell in bash zsh fish; do
    "$bin" generate completions "$shell" "$assets/completions" >/dev/null
done

if [[ $(cargo deb --version 2>/dev/null) != "cargo-deb $CARGO_DEB_VERSION" ]]; then
    step "installing cargo-deb $CARGO_DEB_VERSION (a few minutes on 2 cores)"
    # Its own temporary target dir: nothing of it lands in the project's.
    env -u CARGO_TARGET_DIR cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
fi

step "cargo deb"
rm -rf "$target/debian"
cargo deb --no-build --strip --quiet >/dev/null
debs=("$target"/debian/xdpvs_*.deb)
[[ ${#debs[@]} -eq 1 && -f ${debs[0]} ]] || fail "expected one .deb in $target/debian, found: ${debs[*]}"
deb=${debs[0]}
step "built $deb"

# --- contents ---------------------------------------------------------------
listing=$(dpkg-deb -c "$deb" | awk '{print $NF}' | sed 's#^\./#/#')
expected=(
    /usr/bin/xdpvs
    /etc/xdpvs/xdpvs.toml
    /usr/lib/systemd/system/xdpvs.service
    /usr/share/doc/xdpvs/examples/xdpvs.toml
    /usr/share/doc/xdpvs/README.md
    /usr/share/bash-completion/completions/xdpvs
    /usr/share/zsh/vendor-completions/_xdpvs
    /usr/share/fish/vendor_completions.d/xdpvs.fish
)
# One man page per (visible) subcommand, as the generator wrote them.
for page in "$assets"/man/*.1; do
    expected+=("/usr/share/man/man1/$(basename "$page").gz")
done
[[ -f $assets/man/xdpvs-run.1 && -f $assets/man/xdpvs-service-add.1 ]] ||
    fail "man pages missing in $assets/man"
for f in "${expected[@]}"; do
    grep -qxF "$f" <<<"$listing" || fail "$f is not in $deb (dpkg-deb -c)"
done
grep -q generate <<<"$listing" && fail "a page or completion of the hidden 'generate' command is in the package"
ok "contents: ${#expected[@]} expected files (binary, unit, config, examples, $(ls "$assets"/man | wc -l) man pages, 3 completions)"
dpkg-deb -f "$deb" Package Version Architecture Depends >&2
conffiles=$(dpkg-deb -I "$deb" conffiles)
grep -qxF /etc/xdpvs/xdpvs.toml <<<"$conffiles" || fail "/etc/xdpvs/xdpvs.toml is not a conffile"
ok "conffiles: $conffiles"
ctl=$(mktemp -d)
dpkg-deb -e "$deb" "$ctl"
grep -q "daemon-reload" "$ctl/postinst" && grep -q "try-restart xdpvs.service" "$ctl/postinst" ||
    fail "postinst does not reload systemd and restart a running xdpvs on upgrade"
grep -q "stop xdpvs.service" "$ctl/prerm" || fail "prerm does not stop xdpvs on removal"
if grep -Eq "invoke start|systemctl (--system )?(start|enable)" "$ctl/postinst"; then
    fail "postinst starts or enables xdpvs (it must wait for the operator)"
fi
rm -rf "$ctl"
ok "maintainer scripts: daemon-reload, restart on upgrade, stop on removal, never enabled or started"

# --- the unit, against the extracted package --------------------------------
root=$(mktemp -d)
ns=
pid=
cleanup() {
    if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; fi
    if [[ -n $ns ]]; then ip netns del "$ns" 2>/dev/null || true; fi
    rm -rf "$root"
}
trap cleanup EXIT
dpkg-deb -x "$deb" "$root"
unit=$root/usr/lib/systemd/system/xdpvs.service
cmp -s "$unit" packaging/xdpvs.service || fail "the packaged unit differs from packaging/xdpvs.service"
# systemd-analyze, and man for the Documentation= check.
need=()
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v man >/dev/null || need+=(man-db)
if ((${#need[@]})); then
    if [[ $(id -u) -eq 0 ]]; then
        step "installing ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null 2>&1 || true
        apt-get install -y -qq "${need[@]}" >/dev/null
    else
        fail "missing tools: apt-get install ${need[*]}"
    fi
fi
# --root: ExecStart=/usr/bin/xdpvs and the unit resolve inside the package,
# the man pages of Documentation= are looked up in the package too, and the
# targets it names (multi-user, network-online, sysinit) are the host's
# (copied beside it). verify prints problems on stderr and exits 0 for
# some: any output counts as a failure.
cp -an /usr/lib/systemd/system/. "$root/usr/lib/systemd/system/" || true
verify_out=$(MANPATH=$root/usr/share/man SYSTEMD_LOG_LEVEL=notice \
    systemd-analyze verify --root="$root" --man=yes /usr/lib/systemd/system/xdpvs.service 2>&1) ||
    fail "systemd-analyze verify: $verify_out"
[[ -z $verify_out ]] || fail "systemd-analyze verify: $verify_out"
ok "systemd-analyze verify --root: clean"
# Units with a mistake must not pass the same check (so this step checks).
for mistake in 's/^Restart=on-failure/Restart=whenever/' \
    's#^ExecStart=/usr/bin/xdpvs #ExecStart=/usr/bin/xdpvs-missing #' \
    's#man:xdpvs(1)#man:xdpvs-missing(1)#'; do
    sed "$mistake" "$unit" >"$root/usr/lib/systemd/system/xdpvs-broken.service"
    broken=$(MANPATH=$root/usr/share/man SYSTEMD_LOG_LEVEL=notice \
        systemd-analyze verify --root="$root" --man=yes /usr/lib/systemd/system/xdpvs-broken.service 2>&1) || true
    [[ -n $broken ]] || fail "systemd-analyze verify accepted a unit with: $mistake"
done
rm -f "$root/usr/lib/systemd/system/xdpvs-broken.service"
ok "systemd-analyze verify rejects a bad Restart=, a missing ExecStart binary, a missing man page"

"$root/usr/bin/xdpvs" check --config "$root/etc/xdpvs/xdpvs.toml" >&2 ||
    fail "the shipped /etc/xdpvs/xdpvs.toml does not pass xdpvs check"
ok "/etc/xdpvs/xdpvs.toml passes xdpvs check"
"$root/usr/bin/xdpvs" check --config "$root/usr/share/doc/xdpvs/examples/xdpvs.toml" >/dev/null ||
    fail "the shipped example config does not pass xdpvs check"
ok "examples/xdpvs.toml passes xdpvs check"

# --- the unit's capabilities suffice ------------------------------------------
# Runs the packaged binary as nobody with exactly AmbientCapabilities (and
# the same bounding set), as systemd would, on a veth pair in a network
# namespace of its own.
if [[ $(id -u) -ne 0 ]] || ! command -v ip >/dev/null || ! command -v setpriv >/dev/null; then
    if [[ ${CI:-} == true || ${CI:-} == 1 ]]; then
        fail "the capability check needs root, ip and setpriv"
    fi
    step "NOT ROOT (or no ip/setpriv): the capability check SKIPS"
    skipped=1
else
    caps=$(sed -n 's/^AmbientCapabilities=//p' "$unit")
    bound=$(sed -n 's/^CapabilityBoundingSet=//p' "$unit")
    [[ -n $caps && $caps == "$bound" ]] || fail "AmbientCapabilities ($caps) and CapabilityBoundingSet ($bound) differ"
    set_=$(tr ' ' '\n' <<<"$caps" | tr 'A-Z' 'a-z' | sed 's/^cap_/+/' | paste -sd,)
    ns=xdpvspkg$$
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$ns" link add pk0 type veth peer name pk1
    ip -n "$ns" link set pk0 up
    ip -n "$ns" link set pk1 up
    ip -n "$ns" addr add 198.18.9.1/24 dev pk0
    run=$root/run
    mkdir -p "$run"
    chmod 755 "$root"
    chown 65534:65534 "$run"
    cat >"$root/cap.toml" <<EOF
[director]
interfaces = ["pk0"]
xdp_mode = "generic"
control_socket = "$run/xdpvs.sock"
metrics = "off"
conn_capacity = 4096
template_capacity = 1024
[[service]]
name = "web"
proto = "tcp"
vip = "198.18.9.100"
port = 80
  [[service.real]]
  addr = "198.18.9.2"
  [[service.real]]
  addr = "198.18.9.3"
EOF
    chmod 644 "$root/cap.toml"
    as_nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups)
    ip netns exec "$ns" "${as_nobody[@]}" --inh-caps="-all,$set_" --ambient-caps="-all,$set_" \
        --bounding-set="-all,$set_" "$root/usr/bin/xdpvs" run --config "$root/cap.toml" --duration 60 \
        >"$root/run.log" 2>&1 &
    pid=$!
    up=
    for _ in $(seq 1 300); do
        grep -q "capabilities dropped" "$root/run.log" && { up=1; break; }
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    [[ -n $up ]] || { cat "$root/run.log" >&2; fail "xdpvs run did not start with the unit's capabilities ($caps)"; }
    listed=$(ip netns exec "$ns" "${as_nobody[@]}" "$root/usr/bin/xdpvs" list --config "$root/cap.toml") ||
        fail "xdpvs list as the service's user"
    grep -q "198.18.9.3:80" <<<"$listed" || fail "xdpvs list: $listed"
    ip netns exec "$ns" "${as_nobody[@]}" "$root/usr/bin/xdpvs" reload --config "$root/cap.toml" >&2 ||
        fail "xdpvs reload (ExecReload) as the service's user"
    kill -TERM "$pid"
    rc=0
    wait "$pid" || rc=$?
    pid=
    [[ $rc -eq 0 ]] || { cat "$root/run.log" >&2; fail "xdpvs run exited $rc on SIGTERM"; }
    grep -q "state saved" "$root/run.log" || { cat "$root/run.log" >&2; fail "no state saved on SIGTERM"; }
    grep "capabilities dropped" "$root/run.log" | head -1 >&2
    ok "xdpvs run as nobody with $caps: started, list, reload, stopped"
fi

size=$(stat -c %s "$deb")
step "OK: $deb ($((size / 1024)) KiB, $(wc -l <<<"$listing") entries)"
echo "package: $passed passed, 0 failed, $skipped skipped"
