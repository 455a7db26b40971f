#!/usr/bin/env bash
# lbd's files laid out as installed, and the Debian package made of them.
#
#   scripts/package.sh install [DESTDIR]   build (release) and install under
#                                          DESTDIR (default /): make install
#   scripts/package.sh deb                 build (release) and write
#                                          target/deb/lbd_VERSION_ARCH.deb: make deb
#
# PROFILE=debug uses the debug build (the tests do, to save a release build).
# What goes where:
#   /usr/bin/lbd, /usr/bin/lbctl
#   /lib/systemd/system/lbd.service          (packaging/lbd.service)
#   /etc/lbd/lbd.conf                        (packaging/lbd.conf; a conffile)
#   /usr/share/man/man8/lbd.8.gz, man1/lbctl.1.gz   (from the clap definitions)
#   bash, zsh and fish completions of lbctl
#   /usr/share/doc/lbd/                      README, DEPLOYMENT, lb.example.toml
#   /usr/share/lbd/prometheus/               lbd-alerts.yml and its promtool tests
#   /usr/share/lbd/grafana/lbd.json          the Grafana dashboard
# The state directory /var/lib/lbd is the unit's StateDirectory (systemd
# makes it); `install` makes it too, for those who start lbd by hand.
#
# The feedback agent runs on the backends, not beside lbd (and needs no
# DPDK), so it is a package of its own:
#   scripts/package.sh agent-install [DESTDIR]   make install-agent
#   scripts/package.sh agent-deb                 make deb-agent:
#                                                target/deb/lb-agent_VERSION_ARCH.deb
#   /usr/bin/lb-agent, /lib/systemd/system/lb-agent.service,
#   /etc/lb-agent/lb-agent.conf (a conffile), /usr/share/man/man8/lb-agent.8.gz,
#   /usr/share/doc/lb-agent/README.md
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-release}
die() { echo "package: $*" >&2; exit 1; }

build() {
    local flag=()
    [ "$PROFILE" = release ] && flag=(--release)
    cargo build "${flag[@]}" --locked -p control -p lbctl >&2
}

stage() {
    local root=$1 bin="target/$PROFILE"
    [ -x "$bin/lbd" ] && [ -x "$bin/lbctl" ] || die "$bin/lbd or lbctl missing"
    install -d "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/lbd" \
        "$root/usr/share/man/man8" "$root/usr/share/man/man1" \
        "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
        "$root/usr/share/fish/vendor_completions.d" "$root/usr/share/doc/lbd" \
        "$root/usr/share/lbd/prometheus" "$root/usr/share/lbd/grafana"
    install -m 0755 "$bin/lbd" "$bin/lbctl" "$root/usr/bin/"
    install -m 0644 packaging/lbd.service "$root/lib/systemd/system/lbd.service"
    install -m 0644 packaging/lbd.conf "$root/etc/lbd/lbd.conf"
    "$bin/lbd" --generate-man | gzip -9n > "$root/usr/share/man/man8/lbd.8.gz"
    "$bin/lbctl" --generate-man | gzip -9n > "$root/usr/share/man/man1/lbctl.1.gz"
    "$bin/lbctl" completions bash > "$root/usr/share/bash-completion/completions/lbctl"
    "$bin/lbctl" completions zsh > "$root/usr/share/zsh/vendor-completions/_lbctl"
    "$bin/lbctl" completions fish > "$root/usr/share/fish/vendor_completions.d/lbctl.fish"
    install -m 0644 README.md docs/DEPLOYMENT.md control/lb.example.toml "$root/usr/share/doc/lbd/"
    install -m 0644 packaging/prometheus/lbd-alerts.yml packaging/prometheus/lbd-alerts.test.yml \
        "$root/usr/share/lbd/prometheus/"
    install -m 0644 packaging/grafana/lbd.json "$root/usr/share/lbd/grafana/"
    chmod 0644 "$root"/usr/share/man/man*/*.gz "$root"/usr/share/*/*completions*/*
}

version() {
    sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1
}

# The Debian packages whose libraries lbd links (DPDK's, libc, ...): one
# dpkg -S for all of them (under usrmerge dpkg knows /lib, not /usr/lib).
depends() {
    ldd "$1" | awk '$3 ~ /^\// {print $3; print "/usr" $3}' | xargs dpkg -S 2>/dev/null |
        cut -d: -f1 | sort -u | paste -sd, | sed 's/,/, /g'
}

cmd_install() {
    local root=${1:-/}
    build
    stage "$root"
    install -d -m 0700 "$root/var/lib/lbd"
    if [ "$root" = / ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
    echo "installed under $root: systemctl enable --now lbd (after editing /etc/lbd/lbd.conf)"
}

cmd_deb() {
    command -v dpkg-deb >/dev/null || die "dpkg-deb is missing (Debian's dpkg)"
    build
    local arch ver root out
    arch=$(dpkg --print-architecture)
    ver=$(version)
    root="target/deb/lbd_${ver}_${arch}"
    out="target/deb/lbd_${ver}_${arch}.deb"
    rm -rf "$root" "$out"
    stage "$root"
    # Debian ships binaries stripped (symbols belong in a -dbgsym package).
    strip --strip-debug "$root/usr/bin/lbd" "$root/usr/bin/lbctl"
    install -d "$root/DEBIAN"
    cat > "$root/DEBIAN/control" <<CONTROL
Package: lbd
Version: $ver
Architecture: $arch
Maintainer: lbd developers <lbd@localhost>
Section: net
Priority: optional
Depends: $(depends "$root/usr/bin/lbd"), dpdk, iproute2, ethtool
Suggests: bird2
Installed-Size: $(du -sk "$root" | cut -f1)
Description: L4 direct-server-return load balancer on DPDK
 lbd forwards the flows of virtual IPs to real servers by weighted Maglev
 in DR mode (only the Ethernet header is rewritten; servers answer the
 clients directly), with health checks along the DR path, a gRPC API
 (lbctl), Prometheus metrics and BGP announcement through BIRD.
CONTROL
    echo /etc/lbd/lbd.conf > "$root/DEBIAN/conffiles"
    cat > "$root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
# Not enabled or started: the port in /etc/lbd/lbd.conf must be set first.
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
POSTINST
    cat > "$root/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
if [ "$1" = purge ]; then rm -rf /var/lib/lbd; fi
POSTRM
    chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/postrm"
    dpkg-deb --root-owner-group --build "$root" "$out" >&2
    echo "$out"
}

# The agent's build honours CARGO_TARGET_DIR.
agent_bin() { echo "${CARGO_TARGET_DIR:-target}/$PROFILE"; }

agent_build() {
    local flag=()
    [ "$PROFILE" = release ] && flag=(--release)
    cargo build "${flag[@]}" --locked -p lb-agent >&2
}

agent_stage() {
    local root=$1 bin
    bin=$(agent_bin)
    [ -x "$bin/lb-agent" ] || die "$bin/lb-agent missing"
    install -d "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/lb-agent" \
        "$root/usr/share/man/man8" "$root/usr/share/doc/lb-agent"
    install -m 0755 "$bin/lb-agent" "$root/usr/bin/"
    install -m 0644 packaging/lb-agent.service "$root/lib/systemd/system/lb-agent.service"
    install -m 0644 packaging/lb-agent.conf "$root/etc/lb-agent/lb-agent.conf"
    "$bin/lb-agent" --generate-man | gzip -9n > "$root/usr/share/man/man8/lb-agent.8.gz"
    chmod 0644 "$root/usr/share/man/man8/lb-agent.8.gz"
    install -m 0644 agent/README.md "$root/usr/share/doc/lb-agent/"
}

cmd_agent_install() {
    local root=${1:-/}
    agent_build
    agent_stage "$root"
    if [ "$root" = / ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
    echo "installed under $root: systemctl enable --now lb-agent (after editing /etc/lb-agent/lb-agent.conf)"
}

cmd_agent_deb() {
    command -v dpkg-deb >/dev/null || die "dpkg-deb is missing (Debian's dpkg)"
    agent_build
    local arch ver root out
    arch=$(dpkg --print-architecture)
    ver=$(version)
    root="${CARGO_TARGET_DIR:-target}/deb/lb-agent_${ver}_${arch}"
    out="$root.deb"
    rm -rf "$root" "$out"
    agent_stage "$root"
    strip --strip-debug "$root/usr/bin/lb-agent"
    install -d "$root/DEBIAN"
    cat > "$root/DEBIAN/control" <<CONTROL
Package: lb-agent
Version: $ver
Architecture: $arch
Maintainer: lbd developers <lbd@localhost>
Section: net
Priority: optional
Depends: $(depends "$root/usr/bin/lb-agent")
Installed-Size: $(du -sk "$root" | cut -f1)
Description: load feedback agent for the lbd load balancer
 lb-agent runs on a backend server and reports its spare capacity (from
 the CPU load and the NIC's egress, a fixed value, or a file) as a weight
 percentage, over HAProxy's agent-check text protocol and as JSON over
 HTTP, so that lbd sends new streams where there is room for them.
CONTROL
    echo /etc/lb-agent/lb-agent.conf > "$root/DEBIAN/conffiles"
    cat > "$root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
# Not enabled or started: choose what it measures in /etc/lb-agent/lb-agent.conf.
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
POSTINST
    cat > "$root/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
POSTRM
    chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/postrm"
    dpkg-deb --root-owner-group --build "$root" "$out" >&2
    echo "$out"
}

case "${1:-}" in
    install) shift; cmd_install "$@" ;;
    deb) cmd_deb ;;
    agent-install) shift; cmd_agent_install "$@" ;;
    agent-deb) cmd_agent_deb ;;
    *) die "usage: scripts/package.sh install [DESTDIR] | deb | agent-install [DESTDIR] | agent-deb" ;;
esac
