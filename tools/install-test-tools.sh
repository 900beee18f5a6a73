#!/usr/bin/env bash
# Independent reference tools the tests compare against (never runtime dependencies):
#   plastimatch (RTSS rasterization), elastix (registration), chromium + chromium-driver
#   (QC pages driven by Selenium),
#   bids-validator from npm (BIDS validity). Debian packages need root; without root the
#   tests that need them are skipped with a message naming the missing tool.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(plastimatch elastix chromium chromium-driver)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "install-test-tools: not root, skipping Debian packages: ${missing[*]}" >&2
    fi
fi

BIDS_VALIDATOR_VERSION=1.15.0
if command -v npm >/dev/null 2>&1; then
    if [[ ! -x .tools/node_modules/.bin/bids-validator ]]; then
        npm install --silent --no-audit --no-fund --prefix .tools "bids-validator@${BIDS_VALIDATOR_VERSION}" >/dev/null
    fi
else
    echo "install-test-tools: npm not found, the BIDS validator test will be skipped" >&2
fi
