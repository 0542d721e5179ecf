#!/usr/bin/env bash
# apt_install PACKAGE PATH [REQUIRED]: install a Debian package unless PATH exists; as root, through a
# password-less sudo, or else print the command. REQUIRED=1 makes a failure exit 1 (else 0).
# Used by ensure_fashion_mnist.sh and ensure_chromium.sh (sourced).
apt_install() {
  local pkg=$1 path=$2 required=${3:-1}
  [ -e "$path" ] && return 0
  echo "$path not found; installing Debian's $pkg ..."
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo"; else
      echo "Cannot install it without root. Run:  sudo apt-get install $pkg" >&2
      return $(( required ? 1 : 0 ))
    fi
  fi
  if command -v apt-get >/dev/null 2>&1; then
    $sudo apt-get install -y -qq "$pkg" >/dev/null 2>&1 || \
      { $sudo apt-get update -qq >/dev/null 2>&1 && $sudo apt-get install -y -qq "$pkg" >/dev/null; }
  fi
  if [ -e "$path" ]; then
    echo "$pkg installed ($path)"
    return 0
  fi
  echo "Could not install $pkg. Run:  sudo apt-get update && sudo apt-get install $pkg" >&2
  return $(( required ? 1 : 0 ))
}
