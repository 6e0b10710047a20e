#!/bin/sh
# Type-checks the dashboard's JavaScript with TypeScript's checker (`// @ts-check` and JSDoc in
# every file); emits nothing. Uses `tsc` from $TSC, from PATH or from /tmp/tsc (where
# `npm install --prefix /tmp/tsc typescript` puts it); without one it says so and exits 0, so
# nothing else depends on npm.
set -eu
cd "$(dirname "$0")"
tsc="${TSC:-}"
if [ -z "$tsc" ]; then
  if command -v tsc >/dev/null 2>&1; then tsc=tsc
  elif [ -x /tmp/tsc/node_modules/.bin/tsc ]; then tsc=/tmp/tsc/node_modules/.bin/tsc
  fi
fi
if [ -z "$tsc" ]; then
  echo "ui/check.sh: skipped, no TypeScript checker (npm install --prefix /tmp/tsc typescript, or set TSC)" >&2
  exit 0
fi
echo "ui/check.sh: $("$tsc" --version)" >&2
exec "$tsc" --allowJs --checkJs --noEmit --strict --target es2020 --module es2020 \
  --lib es2020,dom,dom.iterable assets/*.js assets/pages/*.js
