#!/bin/sh
# check_self_contained.sh — fails when a tracked file points outside the
# repository: at files beside the checkout (a path through ../shared or
# shared/NAME), at upper-case design notes that are not part of the project
# (ARCHITECTURE, DATA, CPU, DEVICE, STYLE with .md; the project's own are the
# lower-case docs/*.md), or at numbered issues of a tracker a clone does not
# have.  Prints every hit as file:line:text and exits 1 if there is any.
# Text files only; this script is not scanned (it holds the patterns).
# Run by ctest as `self_contained`.
set -u
cd "$(dirname "$0")/.." || exit 2
self=tools/check_self_contained.sh

# Case-insensitive: ../shared, shared/X, "issue 5", "issues 5 and 6", "issue #5".
outside='\.\./shared|shared/[A-Z]|issues? #?[0-9]'
# Case-sensitive: the upper-case names, not as the tail of a longer word.
notes='(^|[^A-Za-z0-9_])(ARCHITECTURE|DATA|CPU|DEVICE|STYLE)\.md'

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    list() { git ls-files -z; }
else
    list() { find . -path ./.git -prune -o -path './build*' -prune -o -type f -print0 | sed -z 's|^\./||'; }
fi

# -s: a tracked file deleted in the work tree is not an error.
hits=$(list | grep -zv "^$self\$" |
       xargs -0 -r sh -c 'o=$1 n=$2; shift 2
                          grep -nHIsiE -e "$o" -- "$@"
                          grep -nHIsE -e "$n" -- "$@"
                          exit 0' sh "$outside" "$notes" |
       sort -t: -k1,1 -k2,2n -u)

if [ -n "$hits" ]; then
    printf '%s\n' "$hits"
    n=$(printf '%s\n' "$hits" | wc -l)
    echo "check_self_contained: $n reference(s) to files or issues outside the repository;" >&2
    echo "point at the project's own docs instead (docs/architecture.md, docs/data.md, ...)." >&2
    exit 1
fi
echo "check_self_contained: no references outside the repository"
