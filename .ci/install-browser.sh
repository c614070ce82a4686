#!/usr/bin/env bash
# Install Debian's Chromium for tests/test_browser.py (Playwright's own browser download is not
# used). Best effort: it never fails the CI. Without a browser that test skips itself.
#   - nothing to do when /usr/bin/chromium exists;
#   - otherwise installs the `chromium` package when we are root and apt-get is available;
#   - prints why and exits 0 in every other case.
set -u

if [ -x /usr/bin/chromium ]; then
    echo "install-browser: /usr/bin/chromium is already installed"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: no apt-get on this machine; the browser test will be skipped"
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    echo "install-browser: not root, cannot apt-get install chromium; the browser test will be skipped"
    exit 0
fi

log="$(mktemp -t install-browser.XXXXXX)"
echo "install-browser: installing Debian's chromium with apt-get (log: $log)"
if DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$log" 2>&1 \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >>"$log" 2>&1; then
    echo "install-browser: installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
else
    echo "install-browser: apt-get could not install chromium (last lines of $log below);" \
        "the browser test will be skipped"
    tail -n 5 "$log" || true
fi
exit 0
