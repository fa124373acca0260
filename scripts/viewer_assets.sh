#!/usr/bin/env bash
# Refreshes the rollout viewer's vendored front-end library (Chart.js) from npm: installs the
# versions in raydspy/viewer/frontend/package-lock.json and copies the built bundle and the licenses
# into raydspy/viewer/static/vendor/, which the package ships (the pages fetch nothing from the
# internet: clusters may have none). `--upgrade` first moves chart.js to its newest release.
set -euo pipefail
cd "$(dirname "$0")/../raydspy/viewer/frontend"
if [ "${1:-}" = "--upgrade" ]; then
  npm install --save-exact --ignore-scripts --no-audit --no-fund chart.js@latest
fi
npm ci --ignore-scripts --no-audit --no-fund
vendor=../static/vendor
mkdir -p "$vendor"
cp node_modules/chart.js/dist/chart.umd.min.js "$vendor/chart.umd.min.js"
cp node_modules/chart.js/LICENSE.md "$vendor/chart.js.LICENSE.md"
# The bundle includes @kurkle/color, Chart.js's one dependency: its license goes along.
cp node_modules/@kurkle/color/LICENSE "$vendor/kurkle-color.LICENSE.md"
echo "viewer assets: chart.js $(node -p 'require("./node_modules/chart.js/package.json").version') in $vendor"
