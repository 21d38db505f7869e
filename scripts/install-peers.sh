#!/usr/bin/env bash
# Installs the Debian packages the tests use as real peers, where they are missing:
# ffmpeg (real-video packaging, and an HLS client), chromium (hls.js in a real browser, driven by
# playwright-core with executablePath: never a downloaded browser), kcat (a Kafka client).
set -euo pipefail
need=()
for pkg in ffmpeg chromium kcat; do command -v "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
[ ${#need[@]} -eq 0 ] && exit 0
sudo=()
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo=(sudo)
echo "== installing ${need[*]} (apt-get)"
if ! ("${sudo[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${need[@]}" >/dev/null); then
  echo "installing ${need[*]} failed; the tests that need them will say so" >&2
fi
