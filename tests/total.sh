#!/usr/bin/env bash
# total.sh LOG STATUS: the last lines of `make test`: the sum of every
# suite's "N passed, N failed[, N skipped]" line in LOG, and the verdict
# from STATUS (make's exit status). Every suite ends with that line (the C
# tests through tests/check.h, the shell tests through tests/lib.sh), so a
# suite that ran nothing shows as 0 passed, and a build that failed before
# any suite shows as no suites.
set -u
[ $# -eq 2 ] || { echo "usage: total.sh LOG STATUS" >&2; exit 2; }
awk -v status="$2" '
/^[0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?$/ {
    suites++; passed += $1; failed += $3; if (NF >= 6) skipped += $5
}
/^skipped: [0-9]+ / { skipped += $2 } # a suite that could run nothing here (tests/lib.sh)
END {
    if (status != 0) print "make test: FAILED (exit status " status ")"
    else if (suites == 0 || passed == 0) print "make test: FAILED (no test ran)"
    else print "make test: all " suites " suites passed"
    # The last line is the plain "N passed, N failed, N skipped", alone: the
    # line CI reads to see how many tests ran.
    printf "%d passed, %d failed, %d skipped\n", passed, failed, skipped
    if (status == 0 && (suites == 0 || passed == 0)) exit 1
}' "$1"
