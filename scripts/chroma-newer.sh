#!/usr/bin/env bash
# A newer Chroma server (1.3.x, from the npm bindings) on this Debian 12 machine: those
# bindings need glibc >= 2.38, so Debian 13's libc6 is unpacked into a folder and the
# server runs under its loader. Prints the command prefix to start `chroma run` with.
# Usage: scripts/chroma-newer.sh [DIR=/tmp/chroma-newer] [BINDINGS=1.3.4]; then PREFIX run --path D --host 127.0.0.1 --port P
# (the server may ignore SIGTERM: stop it with SIGKILL after a short wait). Idempotent: a second call only prints.
set -eu
dir=${1:-/tmp/chroma-newer}; ver=${2:-1.3.4}
if [ ! -x "$dir/glibc/usr/lib64/ld-linux-x86-64.so.2" ] || [ ! -d "$dir/npm/node_modules/chromadb-js-bindings-linux-x64-gnu" ]; then
  mkdir -p "$dir/apt/lists/partial" "$dir/apt/cache/archives/partial" "$dir/glibc" "$dir/npm"
  # the machine's own Debian mirror (the one apt uses for this release's main), asked for trixie
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  mirror=$(apt-cache policy 2>/dev/null | grep -oE "[a-z]+://[^ ]+ ${codename}/main" | head -1 | cut -d' ' -f1)
  [ -n "$mirror" ] || { echo "no Debian mirror for ${codename}/main in apt's configuration (run apt-get update first)" >&2; exit 1; }
  echo "deb [trusted=yes] $mirror trixie main" > "$dir/apt/sources.list"
  o=(-o "Dir::Etc::sourcelist=$dir/apt/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$dir/apt/lists" -o "Dir::Cache=$dir/apt/cache" -o Dir::State::status=/dev/null)
  apt-get "${o[@]}" update >"$dir/apt/update.log" 2>&1
  (cd "$dir/apt" && apt-get "${o[@]}" download libc6 libgcc-s1 libstdc++6 >"$dir/apt/download.log" 2>&1)
  for d in "$dir"/apt/*.deb; do dpkg-deb -x "$d" "$dir/glibc"; done
  (cd "$dir/npm" && [ -f package.json ] || echo '{"name":"chroma-newer","private":true}' > package.json
   npm install --no-audit --no-fund --silent "chromadb@3.5.0" "chromadb-js-bindings-linux-x64-gnu@$ver" >/dev/null 2>&1)
fi
lib="$dir/glibc/usr/lib/x86_64-linux-gnu"
echo "$dir/glibc/usr/lib64/ld-linux-x86-64.so.2 --library-path $lib $(command -v node) $dir/npm/node_modules/chromadb/dist/cli.mjs"
