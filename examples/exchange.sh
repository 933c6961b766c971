# exchange.sh - sourced by aggregator.sh and client.sh: the exchange
# directory of docs/PROTOCOL.md, a local DIR or HOST:PATH, reached with
# rsync alone (over ssh for HOST:PATH; the remote shell is $EX_SSH).
#
# rsync writes every file under a temporary name (.NAME.XXXXXX) in the
# target directory and renames it when it is complete, so nothing appears
# under its final name half-written; readers skip names that start with '.'.
# Needs EX (the exchange) and EX_SSH (default ssh) set by the caller.

EX_SSH=${EX_SSH:-ssh}
# a link that stalls this long fails the transfer (it is retried), instead of hanging the party
EX_TIMEOUT=${EX_TIMEOUT:-120}

ex_rsync() { rsync --timeout="$EX_TIMEOUT" -e "$EX_SSH" "$@"; }

# ex_get REL DEST: one file of the exchange to DEST (temporary name, then renamed)
ex_get() { ex_rsync -a "$EX/$1" "$2"; }

# ex_meta DEST: every round.json and record.json of the exchange,
# federation.json and final.json, into the directory DEST (small files:
# what a party polls)
ex_meta() {
    mkdir -p "$1"
    ex_rsync -a -m --include='round-*/' --include='round-*/round.json' --include='round-*/record.json' \
        --include='final.json' --include='federation.json' --exclude='*' "$EX/" "$1/"
}

# ex_latest_round DIR: the highest N with DIR/round-N/round.json (0: none)
ex_latest_round() {
    local f n last=0
    for f in "$1"/round-*/round.json; do
        [ -e "$f" ] || continue
        n=${f%/round.json} n=${n##*/round-}
        [[ "$n" =~ ^[1-9][0-9]*$ ]] && [ "$n" -gt "$last" ] && last=$n
    done
    echo "$last"
}

# ex_publish TREE: copies the files under the directory TREE to the same
# paths on the exchange. Published files are never rewritten: a file that is
# already there with the same bytes is left alone (a restarted party
# publishes again), one with other bytes is an error and nothing is copied.
ex_publish() {
    local tree=$1 changes
    changes=$(ex_rsync -a -n -c -i "$tree/" "$EX/") || return 1
    if grep -q '^>f[^+]' <<<"$changes"; then
        echo "exchange: $EX already holds other bytes under $(grep '^>f[^+]' <<<"$changes" | head -1 | cut -c13-);" \
            "a published file is never rewritten" >&2
        return 1
    fi
    ex_rsync -a --ignore-existing "$tree/" "$EX/"
}

# ex_upload FILE REL: FILE to REL on the exchange, replacing what is there
# (a member's own delivery), then checks that the exchange holds these bytes
ex_upload() {
    ex_rsync -a "$1" "$EX/$2" || return 1
    [ -z "$(ex_rsync -a -n -c -i "$1" "$EX/$2")" ] || { echo "exchange: $EX/$2 does not hold the bytes uploaded" >&2; return 1; }
}

# ex_round_args FILE R: the round.json FILE of round R, checked, as lines:
# the base checkpoint's name and SHA-256, the update's name and the SHA-256
# it applies to ('-' for none), the personal tensors' globs (comma-joined,
# '-' for none), then the photon-train flags it fixes, one per line. Only
# the training schedule comes from round.json: a party refuses any other
# flag, so whoever wrote it cannot make it read or write a file of their
# choosing. Exits 1 with the reason when FILE does not hold to that.
ex_round_args() {
    python3 - "$1" "$2" <<'PY'
import json, re, sys
path, r = sys.argv[1], int(sys.argv[2])
try:
    rj = json.load(open(path))
except Exception as e:
    sys.exit(f"{path}: not JSON ({e})")
if rj.get("format") != "photon-round" or rj.get("round") != r:
    sys.exit(f"{path}: not the round.json of round {r}")
if not re.fullmatch(r"global-r[0-9]+\.safetensors", str(rj.get("base"))) or not re.fullmatch(r"[0-9a-f]{64}", str(rj.get("base_sha256"))):
    sys.exit(f"{path}: base or base_sha256 is not a checkpoint name and a SHA-256")
valued = {"--steps", "--batch", "--seq", "--total-steps", "--lr", "--warmup", "--min-lr-frac", "--weight-decay",
          "--beta1", "--beta2", "--eps", "--grad-clip"}
args, it = rj.get("train_args"), iter(rj.get("train_args") or [])
if not isinstance(args, list) or "--steps" not in args:
    sys.exit(f"{path}: train_args must list photon-train flags, --steps among them")
out = []
for flag in it:
    if flag in ("--reset-optimizer", "--no-error-feedback"):
        out.append(flag)
    elif flag == "--delta-format":
        v = next(it, None)
        if v not in ("f32", "bf16", "int8", "int4"):
            sys.exit(f"{path}: --delta-format needs f32, bf16, int8 or int4, got {v!r}")
        out += [flag, v]
    elif flag in valued:
        v = next(it, None)
        if not isinstance(v, str) or not re.fullmatch(r"[0-9.eE+-]{1,32}", v):
            sys.exit(f"{path}: {flag} needs a number, got {v!r}")
        out += [flag, v]
    else:
        sys.exit(f"{path}: train_args asks for {flag!r}, which a client does not take from the aggregator")
update, since = rj.get("update"), rj.get("update_from_sha256")
if update is not None and not (re.fullmatch(r"update-r[0-9]+\.safetensors", str(update)) and re.fullmatch(r"[0-9a-f]{64}", str(since))):
    sys.exit(f"{path}: update or update_from_sha256 is not an update name and a SHA-256")
members = rj.get("members")
if not isinstance(members, list) or not all(isinstance(m, str) and re.fullmatch(r"[A-Za-z0-9._-]{1,63}", m) for m in members):
    sys.exit(f"{path}: members must list client ids")
personal = rj.get("personal", [])
if not isinstance(personal, list) or len(personal) > 16 or \
        not all(isinstance(g, str) and re.fullmatch(r"[A-Za-z0-9._*?-]{1,64}", g) for g in personal):
    sys.exit(f"{path}: personal must list tensor-name globs (letters, digits, . _ - * ?)")
print(rj["base"]); print(rj["base_sha256"]); print(update or "-"); print(since or "-")
print(",".join(personal) or "-")
print("\n".join(out))
PY
}

# ex_globs GLOBS...: tensor-name globs (each argument may hold several,
# comma-separated; '-' for none), one a line, sorted and each once: the same
# choice is the same list, whatever order it was given in
ex_globs() { printf '%s\n' "$@" | tr , '\n' | grep -vx -- '-' | LC_ALL=C sort -u | grep -v '^$' || true; }

# ex_id_valid ID: a client id as photon-train takes it (letters, digits, . _ -)
ex_id_valid() { [[ "$1" =~ ^[A-Za-z0-9._-]{1,63}$ ]] && [ "$1" != . ] && [ "$1" != .. ]; }

ex_sha256() { sha256sum "$1" | cut -c1-64; }
ex_bytes() { wc -c <"$1" | tr -d ' '; }
