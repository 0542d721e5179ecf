#!/usr/bin/env bash
# Make sure Debian's Chromium is installed for the browser tests (Playwright drives it; never `playwright install`).
# Without root it prints the command and exits 0: the browser tests then skip, except under CI=true.
set -u
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
echo "Chromium not found; installing Debian's chromium for the browser tests ..."
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo"; else
    echo "Cannot install it without root. Run:  sudo apt-get install chromium   (browser tests skip until then)" >&2
    exit 0
  fi
fi
if command -v apt-get >/dev/null 2>&1; then
  $SUDO apt-get install -y -qq chromium >/dev/null 2>&1 || \
    { $SUDO apt-get update -qq >/dev/null 2>&1 && $SUDO apt-get install -y -qq chromium >/dev/null; }
fi
if [ -x /usr/bin/chromium ]; then
  echo "Chromium installed: $(/usr/bin/chromium --version 2>/dev/null)"
else
  echo "Could not install Chromium. Run:  sudo apt-get update && sudo apt-get install chromium" >&2
fi
exit 0
