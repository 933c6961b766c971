# tests/lib.sh - the helpers every shell test suite shares (sourced, never run).
# shellcheck shell=bash
#
#   . "$ROOT/tests/lib.sh"
#   scratch NAME                   # $W, the counters, the clock
#   check "what is true" CMD...    # "ok - ..." or "FAIL - ..."
#   summary                        # "N passed, N failed"; the suite's exit status
#
# A suite prints one line per check: "ok - DESC", "FAIL - DESC" (followed by
# indented detail) or "skip - REASON", and last "N passed, N failed" (and
# ", N skipped" when a check was skipped), or "skipped: N (...)" when none
# could run here; tests/total.sh sums them into the last line of make test,
# the one CI reads. The exit status (summary's) is what `make test` sees.
# Files: $W/out and $W/err hold the stdout and stderr of the last run or
# check; $W/cmd.out and $W/cmd.err those of the command an expect_exit ran.
# A command given to check must not read $W/out or $W/err (check empties
# them first): save what it needs under another name.

# scratch NAME: makes the suite's scratch directory $W (removed on exit) and
# zeroes the counters passed, failed and skipped; starts the clock of summary.
scratch() {
    W=$(mktemp -d "${TMPDIR:-/tmp}/photon-$1.XXXXXX") || { echo "$1: cannot make a scratch directory" >&2; exit 2; }
    trap 'rm -rf "$W"' EXIT
    passed=0 failed=0 skipped=0 START=$SECONDS
}

# pass DESC: counts a passed check and prints "ok - DESC".
pass() { passed=$((passed + 1)); echo "ok - $1"; }

# fail DESC [WHY]: counts a failed check and prints "FAIL - DESC", then WHY
# and the end of the last run's stderr and stdout ($W/err, $W/out), indented.
fail() {
    local f
    failed=$((failed + 1))
    echo "FAIL - $1"
    [ -n "${2:-}" ] && echo "    $2"
    for f in "$W/err" "$W/out"; do
        [ -s "$f" ] && tail -n 20 "$f" | awk '{ print "    | " $0 }'
    done
    return 0
}

# skip REASON: counts a check that cannot run here and prints "skip - REASON"
# (one line: what is skipped, and why).
skip() { skipped=$((skipped + 1)); echo "skip - ${1%%$'\n'*}"; }

# run CMD...: runs CMD with its stdout in $W/out and its stderr in $W/err;
# sets rc to its exit status, and returns it.
run() {
    "$@" >"$W/out" 2>"$W/err"
    rc=$?
    return $rc
}

# check DESC CMD...: runs CMD as run does (its output in $W/out and $W/err,
# its status in rc); passes if it exits 0, else fails showing its output.
check() {
    local desc=$1 cmd
    shift
    if run "$@"; then
        pass "$desc"
    else
        cmd="$*"
        fail "$desc" "exit $rc: ${cmd:0:200}"
    fi
}

# The helpers of the suites that run parties as processes (test_parties.sh,
# test_group_parties.sh):
# wait_for SECONDS CMD...: until CMD holds, or fails after SECONDS
wait_for() {
    local limit=$(($(date +%s) + $1))
    shift
    until "$@"; do [ "$(date +%s)" -lt "$limit" ] || return 1; sleep 0.02; done
}
# kill_group PID: kill -9 the process group PID leads (a party started with setsid), and reap it
kill_group() { kill -9 -- "-$1" 2>/dev/null; wait "$1" 2>/dev/null; }
# need DESC CMD...: a check the rest of the suite depends on: if it fails,
# the suite stops there (its trap ends what it started)
need() { check "$@" || { [ "$failed" = 0 ] || { summary "(stopped at the first failed step)"; exit 1; }; }; }

# one_line FILE: FILE is exactly one non-empty line that ends in a newline.
# If not, says so on stderr, with the file.
one_line() {
    [ "$(wc -l <"$1")" -eq 1 ] && [ -z "$(tail -c 1 "$1")" ] && [ "$(wc -c <"$1")" -gt 1 ] && return 0
    echo "$1: not one line (ending in a newline):" >&2
    head -n 20 "$1" >&2
    return 1
}

# same_state A B: two client states hold the same moments, counters and data
# position: the same bytes but for their commit records (photon.commit.*:
# which files they were resumed from and written with). If not, says so.
same_state() {
    local f n
    for f in "$1" "$2"; do
        n=$(od -An -t u8 -N 8 "$f" | tr -d ' ') || return 1
        head -c $((8 + n)) "$f" | tail -c "$n" | sed 's/"photon\.commit\.[a-z_0-9]*":"[^"]*",//g; s/ *$//' >"$f.header"
        tail -c +$((9 + n)) "$f" >"$f.data"
    done
    cmp -s "$1.header" "$2.header" && cmp -s "$1.data" "$2.data" && rm -f "$1.header" "$1.data" "$2.header" "$2.data" &&
        return 0
    echo "$1 and $2 differ (beyond their commit records)" >&2
    return 1
}

# expect_exit CODE PATTERN CMD...: CMD exits with CODE and its stderr matches
# PATTERN (grep -E); when CODE is not 0, the stderr is exactly one line (the
# one-line failure message of tools/cli.h). With LATE=1 the failure comes
# after other lines (progress, notes on skipped inputs): then its last line
# is the message, and must match. CMD's output goes to $W/cmd.out and
# $W/cmd.err. A test for check: says on stderr what is wrong.
expect_exit() {
    local code=$1 pattern=$2 status message=$W/cmd.err
    shift 2
    "$@" >"$W/cmd.out" 2>"$W/cmd.err"
    status=$?
    if [ -n "${LATE:-}" ]; then
        message=$W/cmd.last
        tail -n 1 "$W/cmd.err" >"$message"
    fi
    if [ "$status" != "$code" ]; then
        echo "exit $status, expected $code" >&2
    elif [ "$code" != 0 ] && ! one_line "$message"; then
        return 1
    elif ! grep -Eq -- "$pattern" "$message"; then
        echo "stderr does not match /$pattern/" >&2
    else
        return 0
    fi
    cat "$W/cmd.err" >&2
    return 1
}

# summary [NOTE]: prints "# SECONDS s [NOTE]" and "N passed, N failed" (with
# ", N skipped" if any); returns 1 if a check failed, so that a suite can end
# with it.
summary() {
    echo "# $((SECONDS - START)) s${1:+ $1}"
    if [ "$passed" -eq 0 ] && [ "$failed" -eq 0 ]; then
        echo "skipped: $skipped (nothing in this suite could run here)" # not a count line: a runner that ran no test
    elif [ "$skipped" -gt 0 ]; then
        echo "$passed passed, $failed failed, $skipped skipped"
    else
        echo "$passed passed, $failed failed"
    fi
    [ "$failed" -eq 0 ]
}
