#!/usr/bin/env bash
# Make sure Debian's Chromium is installed for the browser tests (Playwright drives it; never `playwright install`).
# Without root it prints the command and exits 0: the browser tests then skip, except under CI=true.
set -u
source "$(dirname "$0")/apt_install.sh"
apt_install chromium /usr/bin/chromium 0
