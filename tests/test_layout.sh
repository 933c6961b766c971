#!/usr/bin/env bash
# test_layout.sh - photon.h reads as the algorithm, and the docs point at
# what is there: the implementation's parts come in the spine's order with
# the machinery after the merge; the CONTENTS tags stand in the banners;
# docs/ALGORITHM.md names functions that are defined; README's layout names
# files that exist; photon.h does not need photon_bpe.h.
# Prints "ok - ..." / "FAIL - ..." and a last line "N passed, N failed".
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/tests/lib.sh"
scratch layout
H=$ROOT/photon.h

# definitions FILE: every top-level function definition, "LINE NAME" (a
# declaration that ends in "{" rather than ";", its name the identifier
# before the first "(")
definitions() {
    awk '
        /^(static|PHOTONDEF|PHOTON__MAYBE_UNUSED) / && !sig { sig = $0; start = NR }
        sig && NR > start { sig = sig " " $0 }
        sig && /[;{][[:space:]]*$/ {
            if (sig ~ /\{[[:space:]]*$/ && sig ~ /\(/) {
                name = sig; sub(/\(.*/, "", name); n = split(name, w, /[ *]+/); print start, w[n]
            }
            sig = ""
        }' "$1"
}
definitions "$H" >"$W/defs"
# the implementation's banners: "LINE TAG"
grep -n '^/\* >>[a-z0-9_]*:' "$H" | sed 's/^\([0-9]*\):\/\* >>\([a-z0-9_]*\):.*/\1 \2/' >"$W/banners"
line_of() { awk -v t="$1" '$2 == t { print $1; exit }' "$W/banners"; }
first_def_after() { awk -v l="$1" '$1 > l { print $1; exit }' "$W/defs"; }

spine="errors params layers model adamw data eval safetensors checkpoint hf delta outer merge machinery"
order_ok() {
    local last=0 tag at
    for tag in $spine; do
        at=$(line_of "$tag")
        [ -n "$at" ] || { echo "no implementation banner >>$tag" >&2; return 1; }
        [ "$at" -gt "$last" ] || { echo ">>$tag (line $at) comes before the part ahead of it" >&2; return 1; }
        last=$at
    done
}
check "photon.h: the implementation runs errors, params, layers, model, adamw, data, eval, safetensors, checkpoint, hf, delta, outer, merge, then the machinery" order_ok

params_first() {
    local decl=$(grep -n 'The machinery the algorithm calls, declared here' "$H" | cut -d: -f1) first
    first=$(first_def_after "$decl")
    [ "$first" -gt "$(line_of params)" ] && [ "$first" -lt "$(line_of layers)" ] ||
        { echo "the first definition after the errors section is at line $first" >&2; return 1; }
}
check "photon.h: the first definition after errors and memory is the parameter layout" params_first

no_machinery_before_merge() {
    local end=$(line_of machinery) bad
    bad=$(awk -v e="$end" '$1 < e && $2 ~ /^(photon__gemm|photon_gemm|photon__pool_|photon__parallel|photon__scratch|photon_set_threads|photon_threads|photon__json_|photon__text_|photon__utf8|photon__valid_utf8|photon__sha256|photon_sha256_|photon__expf|photon__exp_shifted|photon__tanh_array|photon__kernel|photon__pack)/' "$W/defs")
    [ -z "$bad" ] || { echo "machinery defined before the appendix: $bad" >&2; return 1; }
}
check "photon.h: no GEMM, thread-pool, JSON, UTF-8 or SHA-256 definition comes before the merge" no_machinery_before_merge

tags_in_banners() { # FILE: every >>tag of its CONTENTS stands in a banner
    local file=$1 tag missing=""
    for tag in $(sed -n '/^   CONTENTS/,/^\*\//p' "$file" | grep -o '>>[a-z0-9_]*' | sort -u); do
        grep -q "^/\* [-=]* *$tag\b\|^/\* $tag:" "$file" || missing="$missing $tag"
    done
    [ -z "$missing" ] || { echo "$file: no banner for$missing" >&2; return 1; }
}
check "photon.h: every CONTENTS tag stands in a section banner" tags_in_banners "$H"
check "photon_bpe.h: every CONTENTS tag stands in a section banner" tags_in_banners "$ROOT/photon_bpe.h"
check "photon.h does not need photon_bpe.h" bash -c "! grep -n 'include.*photon_bpe\|photon_bpe_[a-z]*(' '$H'"

algorithm_refs() {
    local f missing=""
    for f in $(grep -o '`photon_*[a-z0-9_]*`' "$ROOT/docs/ALGORITHM.md" | tr -d '`' | sort -u); do
        grep -q " $f\$" "$W/defs" || missing="$missing $f"
    done
    [ -z "$missing" ] || { echo "docs/ALGORITHM.md names functions photon.h does not define:$missing" >&2; return 1; }
}
definitions "$ROOT/photon_bpe.h" >>"$W/defs"
check "docs/ALGORITHM.md: every function it names is defined" algorithm_refs

readme_layout() {
    local name missing=""
    for name in $(sed -n '/^## Layout/,/^```$/{/^```/,/^```/p}' "$ROOT/README.md" | grep -o '[A-Za-z0-9_./-]*\.\(h\|c\|cu\|sh\|py\|md\)\b' | sort -u); do
        [ -n "$(cd "$ROOT" && git ls-files -- "$name" "*/$name" 2>/dev/null | head -1)" ] || [ -e "$ROOT/$name" ] ||
            missing="$missing $name"
    done
    [ -z "$missing" ] || { echo "README's layout names files that are not there:$missing" >&2; return 1; }
}
check "README.md: every file its layout names is in the tree" readme_layout
summary
