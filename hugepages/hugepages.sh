#!/usr/bin/env bash
# Reserve 2 MiB hugepages and mount hugetlbfs for DPDK. Idempotent.
#   hugepages.sh [N]        reserve at least N pages (default 1024 = 2 GiB) and mount /dev/hugepages
#   hugepages.sh --status   print what is reserved, free and mounted
#   hugepages.sh --teardown unmount and release the pages
set -euo pipefail

MNT=${HUGEPAGES_MOUNT:-/dev/hugepages}
NR=/proc/sys/vm/nr_hugepages
SIZE_KB=2048

die() { echo "hugepages: error: $*" >&2; exit 1; }

meminfo() { awk -v k="$1:" '$1 == k { print $2 }' /proc/meminfo; }

status() {
    echo "hugepage size: $(meminfo Hugepagesize) kB"
    echo "reserved: $(meminfo HugePages_Total) pages, free: $(meminfo HugePages_Free)"
    if mountpoint -q "$MNT" 2>/dev/null; then echo "mounted: $MNT"; else echo "mounted: no ($MNT)"; fi
}

need_root() { [ "$(id -u)" = 0 ] || die "must run as root to $1 (try: sudo $0 $*)"; }

[ "$(meminfo Hugepagesize)" = "$SIZE_KB" ] || die "the default hugepage size here is $(meminfo Hugepagesize) kB, not 2048 kB"

case "${1:-1024}" in
--status)
    status
    ;;
--teardown)
    need_root "release hugepages"
    if mountpoint -q "$MNT"; then umount "$MNT"; fi
    echo 0 > "$NR"
    status
    ;;
-h|--help)
    sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'
    ;;
*)
    want=$1
    [[ "$want" =~ ^[0-9]+$ ]] && [ "$want" -gt 0 ] || die "page count must be a positive number, got '$want'"
    have=$(meminfo HugePages_Total)
    if [ "$have" -lt "$want" ]; then
        need_root "reserve hugepages"
        echo "$want" > "$NR" 2>/dev/null || die "the kernel refused writing $want to $NR"
        have=$(meminfo HugePages_Total)
        [ "$have" -ge "$want" ] || die "asked the kernel for $want hugepages, it reserved $have (not enough contiguous free memory?)"
    fi
    if ! mountpoint -q "$MNT"; then
        need_root "mount hugetlbfs"
        mkdir -p "$MNT"
        mount -t hugetlbfs -o pagesize=2M nodev "$MNT" || die "cannot mount hugetlbfs on $MNT"
    fi
    status
    ;;
esac
