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

# ex_id_valid ID: a client id as photon-train takes it (letters, digits, . _ -)
ex_id_valid() { [[ "$1" =~ ^[A-Za-z0-9._-]{1,63}$ ]] && [ "$1" != . ] && [ "$1" != .. ]; }

ex_sha256() { sha256sum "$1" | cut -c1-64; }
ex_bytes() { wc -c <"$1" | tr -d ' '; }
