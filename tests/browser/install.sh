#!/usr/bin/env bash
# tests/browser/install.sh - what the browser test (tests/it/web_page.rs) needs; idempotent.
#
# 1. Debian's Chromium at /usr/bin/chromium (apt-get; needs root, as CI and the dev machines are).
# 2. playwright-core from tests/browser/package-lock.json (npm ci), which drives that Chromium;
#    it never downloads a browser of its own.
# Does nothing for a part that is already there. Exits non-zero when a step fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

if [[ ! -x /usr/bin/chromium ]]; then
    echo "tests/browser/install.sh: installing Debian's chromium" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "tests/browser/install.sh: node and npm are needed (apt-get install nodejs npm)" >&2
    exit 1
fi

# Installed, and not older than the lock file: nothing to do.
if [[ ! -f node_modules/playwright-core/package.json ]] \
    || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
    echo "tests/browser/install.sh: npm ci in tests/browser" >&2
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
fi
