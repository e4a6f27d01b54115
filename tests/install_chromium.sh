#!/usr/bin/env bash
# Headless Chromium and its WebDriver for the dashboard's browser test, called by `make test` before pytest.
#
# Installs Debian's chromium and chromium-driver packages if they are missing (root only). Idempotent:
# nothing is done when both are there. It never fails the suite: when they cannot be had (no root, no
# apt-get), the browser test skips with the reason, except under CI=true, where it fails.
set -u

say() { echo "install_chromium: $*" >&2; }
have() { command -v chromium >/dev/null && command -v chromedriver >/dev/null; }

if have; then
    say "chromium and chromedriver present ($(chromium --version 2>/dev/null | head -n 1))"
    exit 0
fi
[ "$(id -u)" = 0 ] || { say "chromium is not installed and installing it needs root: the browser test will skip"; exit 0; }
command -v apt-get >/dev/null || { say "no apt-get: the browser test will skip"; exit 0; }
export DEBIAN_FRONTEND=noninteractive
say "installing chromium and chromium-driver from the Debian packages"
# Try without refreshing the package lists first; refresh only if that fails (a fresh image has none).
if ! apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || { say "apt-get update failed: the browser test will skip"; exit 0; }
    apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
        || { say "apt-get install chromium chromium-driver failed: the browser test will skip"; exit 0; }
fi
have && say "installed $(chromium --version 2>/dev/null | head -n 1)"
exit 0
