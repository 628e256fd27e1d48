#!/usr/bin/env bash
# Prints why tests failed, from go test -v logs (Ginkgo -ginkgo.v included):
# each Ginkgo "[FAILED]" message up to its "In [It] at:" line, and the
# indented output under each "--- FAIL" of a plain go test. The make targets
# filter their logs down to one line per test; CI prints this after a
# failure so that its report says what failed, not only where. Each block is
# capped, and the tests print only key IDs and hashes, never key material.
#
# usage: hack/failures.sh LOG...
set -uo pipefail

max_lines_per_block=${MAX_LINES_PER_BLOCK:-40}
for log in "$@"; do
  [ -f "$log" ] || continue
  awk -v file="$log" -v max="$max_lines_per_block" '
    function start(kind) { inblock = 1; n = 0; printf "--- %s (%s, line %d)\n", kind, file, NR }
    /\[FAILED\]/ && !/\[FAILED\] in \[/ && !/^• \[FAILED\]/ { start("Ginkgo failure") }
    /^[[:space:]]*--- FAIL/ { start("go test failure"); gotest = 1 }
    inblock {
      if (n < max) print
      else if (n == max) print "  [... cut at " max " lines]"
      n++
      if (/In \[[A-Za-z]+\] at:/) { inblock = 0; print "" }
      else if (gotest && n > 1 && !/^[[:space:]]/) { inblock = 0; gotest = 0; print "" }
    }
  ' "$log"
done
