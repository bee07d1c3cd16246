#!/usr/bin/env bash
# The library's layers, bottom up: a module may use its own layer and the
# layers listed before it, never one listed after it (no upward import, so
# no cycle between layers). Checks every `crate::X` path in code (comment
# lines are skipped) of src/<layer>/ and src/<layer>.rs, tests included.
#
#   scripts/layers.sh     exit 0 and print the layer graph (importer ->
#                         imported: number of lines), or exit 1 naming each
#                         offending file:line
#
# A new top-level module must be added to LAYERS at its place.
set -euo pipefail
cd "$(dirname "$0")/.."

LAYERS=(wire service config shard xdp dataplane control import director cli)

files=()
for l in "${LAYERS[@]}"; do
    [ -d "src/$l" ] && while IFS= read -r f; do files+=("$f"); done < <(find "src/$l" -name '*.rs' | sort)
    [ -f "src/$l.rs" ] && files+=("src/$l.rs")
done

# Top-level modules that are not in the list.
unknown=0
for p in src/*; do
    m=$(basename "$p" .rs)
    case "$m" in lib | main) continue ;; esac
    if [[ " ${LAYERS[*]} " != *" $m "* ]]; then
        echo "src/$m: not in LAYERS of $0 (add it at its place)" >&2
        unknown=1
    fi
done

awk -v order="${LAYERS[*]}" -v unknown="$unknown" '
BEGIN {
    n = split(order, L, " ")
    for (i = 1; i <= n; i++) rank[L[i]] = i
    bad = unknown
}
FNR == 1 {
    # src/<layer>/... or src/<layer>.rs
    split(FILENAME, p, "/")
    from = p[2]
    sub(/\.rs$/, "", from)
}
/^[ \t]*\/\// { next }
{
    line = $0
    while (match(line, /crate::(\{|[a-z_][a-z0-9_]*)/)) {
        to = substr(line, RSTART + 7, RLENGTH - 7)
        line = substr(line, RSTART + RLENGTH)
        if (to == "{") {
            printf "%s:%d: grouped `crate::{...}` import: write one `use` per layer so it can be checked\n", FILENAME, FNR > "/dev/stderr"
            bad = 1
            continue
        }
        if (to == from) continue
        if (!(to in rank)) {
            printf "%s:%d: %s uses crate::%s, which is not a layer\n", FILENAME, FNR, from, to > "/dev/stderr"
            bad = 1
            continue
        }
        if (rank[to] > rank[from]) {
            printf "%s:%d: %s imports %s, a layer above it\n", FILENAME, FNR, from, to > "/dev/stderr"
            bad = 1
            continue
        }
        key = from SUBSEP to
        if (!(key in seen)) { seen[key] = 1; count[key] = 0 }
        # Lines, not occurrences.
        if (last[key] != FILENAME ":" FNR) { count[key]++; last[key] = FILENAME ":" FNR }
    }
}
END {
    if (bad) { print "layers: FAILED" > "/dev/stderr"; exit 1 }
    printf "layers, bottom up:"
    for (i = 1; i <= n; i++) printf " %s%s", L[i], (i < n ? " <" : "\n")
    print "imports (importer -> imported: lines):"
    for (i = n; i >= 1; i--) {
        for (j = i - 1; j >= 1; j--) {
            key = L[i] SUBSEP L[j]
            if (key in count) printf "  %-9s -> %-9s %4d\n", L[i], L[j], count[key]
        }
    }
    print "layers: OK (no upward import)"
}
' "${files[@]}"
