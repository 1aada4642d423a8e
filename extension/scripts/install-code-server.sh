#!/usr/bin/env bash
# Install code-server (a real VS Code in the browser) for the end-to-end test,
# into a cache directory outside the repository. Idempotent: an existing
# complete install is kept. The recipe is the one measured in
# ../shared/ENVIRONMENT.md: code-server 4.100.3 is the last release that
# installs on Node 20; its ripgrep dependency is fed Debian's /usr/bin/rg
# through the download cache it checks first, so nothing is fetched from GitHub.
#
#   extension/scripts/install-code-server.sh DIR [VERSION]
#   -> DIR/node_modules/.bin/code-server
set -euo pipefail
dir=${1:?usage: install-code-server.sh DIR [VERSION]}
version=${2:-4.100.3}
stamp="$dir/.installed-$version"
if [[ -f "$stamp" && -x "$dir/node_modules/.bin/code-server" ]]; then
  exit 0
fi
rg=$(command -v rg || true)
if [[ -z "$rg" ]]; then
  echo "install-code-server: ripgrep (rg) is missing: apt-get install ripgrep" >&2
  exit 3
fi
mkdir -p "$dir"
tmp="$dir/tmp"
rm -rf "$tmp" "$dir/node_modules" "$dir/package-lock.json"
mkdir -p "$tmp/vscode-ripgrep-cache-1.15.11" "$tmp/rg/bin"
cp "$rg" "$tmp/rg/bin/rg"
tar -C "$tmp/rg/bin" -czf \
  "$tmp/vscode-ripgrep-cache-1.15.11/ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz" rg
[[ -f "$dir/package.json" ]] || echo '{"name": "acepilot-e2e-code-server", "private": true}' >"$dir/package.json"
cd "$dir"
TMPDIR="$tmp" npm_config_yes=true npm_config_unsafe_perm=true \
  npm install --no-audit --no-fund "code-server@$version" --foreground-scripts
test -x "$dir/node_modules/.bin/code-server"
rm -rf "$tmp"
touch "$stamp"
