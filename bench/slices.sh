# bench/slices.sh - the data helpers bench/robust.sh and bench/compress.sh
# share (sourced, never run): results.sh's way of cutting and mixing texts.
# shellcheck shell=bash

# piece FILE K N: the K-th of N contiguous pieces of FILE, on stdout
piece() {
    local size n0 n1
    size=$(wc -c <"$1")
    n0=$((size * $2 / $3)) n1=$((size * ($2 + 1) / $3))
    dd if="$1" iflag=skip_bytes,count_bytes skip="$n0" count=$((n1 - n0)) bs=65536 status=none
}

# interleave OUT CHUNK FILE...: chunk k of every file, then chunk k+1 of
# every file, ... into OUT (scratch under $work)
interleave() {
    local dst=$1 size=$2 i=0 tmp="$work/interleave"
    shift 2
    rm -rf "$tmp" && mkdir -p "$tmp"
    for f in "$@"; do split -b "$size" -a 6 -d "$f" "$tmp/$(printf '%03d' "$i")-"; i=$((i + 1)); done
    (cd "$tmp" && ls | LC_ALL=C sort -t- -k2,2 -k1,1 | xargs cat) >"$dst"
    rm -rf "$tmp"
}

# bench_dirs NAME: the settings every bench run shares once its options are
# read: every file of ${domains[@]} readable in $data_dir (made absolute),
# $work (a new scratch directory photon-NAME.XXXXXX under $TMPDIR, removed on
# exit, unless --work gave one) and $out/runs made, both absolute; log() and
# $t_start for the progress lines and the wall time.
bench_dirs() {
    local d
    for d in "${domains[@]}"; do [ -r "$data_dir/$d.txt" ] || die "$data_dir/$d.txt not found (--data-dir)"; done
    data_dir=$(cd "$data_dir" && pwd)
    if [ -z "$work" ]; then
        work=$(mktemp -d "${TMPDIR:-/tmp}/photon-$1.XXXXXX")
        trap 'rm -rf "$work"' EXIT
    fi
    mkdir -p "$work" "$out/runs"
    out=$(cd "$out" && pwd) work=$(cd "$work" && pwd)
    t_start=$(date +%s)
}
log() { echo "[$(date +%H:%M:%S)] $*"; }
