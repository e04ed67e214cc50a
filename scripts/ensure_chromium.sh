#!/usr/bin/env bash
# The dashboard's browser tests (tests/test_api/test_dashboard_browser.py) drive the system's headless Chromium through
# Playwright, which cannot download a browser here. Install Debian's chromium when no Chromium is on the PATH: as
# root directly, else through sudo; otherwise fail, saying what to install (the tests fail too, they never skip).
set -euo pipefail

for candidate in chromium chromium-browser google-chrome; do
    if command -v "$candidate" >/dev/null 2>&1; then
        exit 0
    fi
done

if ! command -v apt-get >/dev/null 2>&1; then
    echo "no Chromium found and no apt-get to install one: install Chromium and put it on the PATH" >&2
    exit 1
fi
run_as_root=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "no Chromium found: install it as root (apt-get install chromium)" >&2
        exit 1
    fi
    run_as_root=(sudo)
fi
echo "installing Chromium for the browser tests (apt-get install chromium)" >&2
"${run_as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${run_as_root[@]}" apt-get install -y -qq chromium >/dev/null
