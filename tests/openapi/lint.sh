#!/usr/bin/env bash
# Lints openapi.yaml (the API's authority) with @redocly/cli's recommended
# ruleset (redocly.yaml here).  Installs the pinned CLI into node_modules/
# when missing.  Exits non-zero on any lint error; warnings are printed.
#   tests/openapi/lint.sh [SPEC]    (default: openapi.yaml at the repo root)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
spec=${1:-$here/../../openapi.yaml}
if [ ! -x "$here/node_modules/.bin/redocly" ]; then
  npm install --prefix "$here" --no-audit --no-fund
fi
cd "$here"
REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true \
  node_modules/.bin/redocly lint --config redocly.yaml --format stylish "$spec"
