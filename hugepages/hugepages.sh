#!/usr/bin/env bash
# Reserve hugepages (2 MiB or 1 GiB, on every NUMA node or one) and mount
# hugetlbfs for DPDK. Idempotent: it only ever raises a reservation.
#   hugepages.sh [--size 2M|1G] [--node N] [COUNT]
#                           reserve at least COUNT pages (default: 1024 of 2 MiB, 2 of 1 GiB) in
#                           all (the kernel spreads them over the nodes) or on node N, and mount
#                           hugetlbfs of that size (/dev/hugepages for 2M, /dev/hugepages-1G for 1G)
#   hugepages.sh --status   every page size and node: reserved, free, and the mounts
#   hugepages.sh [--size S] --teardown
#                           unmount and release the pages of that size (default 2M)
# 1 GiB pages reserved at runtime need that much contiguous free memory per
# page; on a busy server reserve them at boot instead (default_hugepagesz=1G
# hugepagesz=1G hugepages=N on the kernel command line; docs/DEPLOYMENT.md).
set -euo pipefail

die() { echo "hugepages: error: $*" >&2; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "must run as root to $1 (try: sudo $0 ...)"; }

SIZE=2M
NODE=
ACTION=reserve
COUNT=
while [ $# -gt 0 ]; do
    case "$1" in
        --size) SIZE=${2:-}; shift 2 || die "--size needs 2M or 1G" ;;
        --node) NODE=${2:-}; shift 2 || die "--node needs a node number" ;;
        --status) ACTION=status; shift ;;
        --teardown) ACTION=teardown; shift ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) COUNT=$1; shift ;;
    esac
done

case "$SIZE" in
    2M|2m) KB=2048; SIZE=2M; MNT=${HUGEPAGES_MOUNT:-/dev/hugepages}; DEFAULT=1024 ;;
    1G|1g) KB=1048576; SIZE=1G; MNT=${HUGEPAGES_MOUNT:-/dev/hugepages-1G}; DEFAULT=2 ;;
    *) die "--size $SIZE: 2M or 1G" ;;
esac

pool() { # the sysfs directory of this size, on NODE or in all
    if [ -n "$NODE" ]; then
        echo "/sys/devices/system/node/node$NODE/hugepages/hugepages-${KB}kB"
    else
        echo "/sys/kernel/mm/hugepages/hugepages-${KB}kB"
    fi
}

status() {
    local d n
    for d in /sys/kernel/mm/hugepages/hugepages-*; do
        n=${d##*-}
        echo "pages of ${n%kB} kB: reserved $(cat "$d/nr_hugepages"), free $(cat "$d/free_hugepages")"
        for node in /sys/devices/system/node/node*; do
            [ -d "$node/hugepages/${d##*/}" ] || continue
            echo "  ${node##*/}: reserved $(cat "$node/hugepages/${d##*/}/nr_hugepages"), free $(cat "$node/hugepages/${d##*/}/free_hugepages")"
        done
    done
    grep hugetlbfs /proc/mounts | awk '{print "mounted: " $2 " (" $4 ")"}' || echo "mounted: none"
}

case "$ACTION" in
status)
    status
    ;;
teardown)
    need_root "release hugepages"
    if mountpoint -q "$MNT"; then umount "$MNT"; fi
    [ -d "$(pool)" ] && echo 0 > "$(pool)/nr_hugepages"
    status
    ;;
reserve)
    want=${COUNT:-$DEFAULT}
    [[ "$want" =~ ^[0-9]+$ ]] && [ "$want" -gt 0 ] || die "page count must be a positive number, got '$want'"
    dir=$(pool)
    [ -d "$dir" ] || die "no $SIZE pages here${NODE:+ on node $NODE} ($dir): the CPU or kernel lacks them${NODE:+, or there is no node $NODE}"
    have=$(cat "$dir/nr_hugepages")
    if [ "$have" -lt "$want" ]; then
        need_root "reserve hugepages"
        echo "$want" > "$dir/nr_hugepages" 2>/dev/null || die "the kernel refused writing $want to $dir/nr_hugepages"
        have=$(cat "$dir/nr_hugepages")
        [ "$have" -ge "$want" ] || die "asked the kernel for $want pages of $SIZE${NODE:+ on node $NODE}, it reserved $have (not enough contiguous free memory? 1G pages: reserve them at boot)"
    fi
    if ! mountpoint -q "$MNT"; then
        need_root "mount hugetlbfs"
        mkdir -p "$MNT"
        mount -t hugetlbfs -o "pagesize=$SIZE" nodev "$MNT" || die "cannot mount hugetlbfs on $MNT"
    fi
    status
    ;;
esac
