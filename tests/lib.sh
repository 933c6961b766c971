# lib.sh - the check helpers the shell test suites share (sourced).
# The suite sets W (its scratch directory) and passed=0 failed=0 first.
# check DESCRIPTION COMMAND...: "ok - ..." or "FAIL - ..." with the output.
check() {
    local desc=$1
    shift
    if "$@" >"$W/out" 2>"$W/err"; then
        passed=$((passed + 1)); echo "ok - $desc"
    else
        failed=$((failed + 1)); echo "FAIL - $desc"; sed 's/^/    /' "$W/err" "$W/out" | head -20
    fi
}
# expect_exit CODE PATTERN COMMAND...: exits with CODE, one stderr line matching PATTERN
expect_exit() {
    local code=$1 pattern=$2 rc
    shift 2
    "$@" >"$W/cmd.out" 2>"$W/cmd.err"
    rc=$?
    [ "$rc" = "$code" ] || { echo "exit $rc, expected $code" >&2; cat "$W/cmd.err" >&2; return 1; }
    grep -q -- "$pattern" "$W/cmd.err" || { echo "stderr lacks '$pattern':" >&2; cat "$W/cmd.err" >&2; return 1; }
}
one_line() { [ "$(wc -l <"$W/cmd.err")" = 1 ] || { cat "$W/cmd.err" >&2; return 1; }; }
