#!/usr/bin/env bash
# Refreshes the vendored front-end libraries from npm: installs the versions in
# raydspy/viewer/frontend/package-lock.json and copies the built bundles and their licenses into
# raydspy/viewer/static/vendor/, which the package ships (the pages fetch nothing from the
# internet: clusters may have none, and no third-party script runs on the service's origin).
#   - Chart.js: the rollout viewer's charts (raydspy/viewer/static/viewer.js).
#   - swagger-ui-dist: the HTTP service's API page, /docs (raydspy/service/docs.py and
#     raydspy/viewer/static/docs.js), instead of FastAPI's default page, which loads it from a CDN.
# `--upgrade` first moves both to their newest releases (exact versions, no ranges).
set -euo pipefail
cd "$(dirname "$0")/../raydspy/viewer/frontend"
# --ignore-scripts: no package runs code here. swagger-ui-dist depends on @scarf/scarf, whose
# install script reports the install to scarf.sh; it never runs (package.json also turns it off).
if [ "${1:-}" = "--upgrade" ]; then
  npm install --save-exact --ignore-scripts --no-audit --no-fund chart.js@latest swagger-ui-dist@latest
fi
npm ci --ignore-scripts --no-audit --no-fund
vendor=../static/vendor
mkdir -p "$vendor"
cp node_modules/chart.js/dist/chart.umd.min.js "$vendor/chart.umd.min.js"
cp node_modules/chart.js/LICENSE.md "$vendor/chart.js.LICENSE.md"
# The bundle includes @kurkle/color, Chart.js's one dependency: its license goes along.
cp node_modules/@kurkle/color/LICENSE "$vendor/kurkle-color.LICENSE.md"
# Swagger UI: the one-file browser bundle (React and the rest inside it) and its stylesheet. Apache
# 2.0: the license and the NOTICE go along, and the licenses of what the bundle includes.
swagger=node_modules/swagger-ui-dist
cp "$swagger/swagger-ui-bundle.js" "$vendor/swagger-ui-bundle.js"
cp "$swagger/swagger-ui.css" "$vendor/swagger-ui.css"
cp "$swagger/LICENSE" "$vendor/swagger-ui.LICENSE"
cp "$swagger/NOTICE" "$vendor/swagger-ui.NOTICE"
cp "$swagger/swagger-ui-bundle.js.LICENSE.txt" "$vendor/swagger-ui-bundle.js.LICENSE.txt"
version() { node -p "require('./node_modules/$1/package.json').version"; }
echo "viewer assets: chart.js $(version chart.js), swagger-ui-dist $(version swagger-ui-dist) in $vendor"
