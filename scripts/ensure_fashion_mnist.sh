#!/usr/bin/env bash
# Make sure Fashion-MNIST (Debian package dataset-fashion-mnist) is installed; offline-safe.
set -u
DIR=/usr/share/datasets/fashion-mnist
if [ -f "$DIR/train-images-idx3-ubyte.gz" ]; then
  exit 0
fi
echo "Fashion-MNIST not found in $DIR; installing Debian's dataset-fashion-mnist ..."
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo"; else
    echo "Cannot install it without root. Run:  sudo apt-get install dataset-fashion-mnist" >&2
    echo "(or pass --data-root DIR with the four IDX files to every command)" >&2
    exit 1
  fi
fi
if command -v apt-get >/dev/null 2>&1; then
  $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
    { $SUDO apt-get update -qq >/dev/null 2>&1 && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null; }
fi
if [ -f "$DIR/train-images-idx3-ubyte.gz" ]; then
  echo "Fashion-MNIST installed in $DIR"
  exit 0
fi
echo "Could not install Fashion-MNIST. Run:  sudo apt-get update && sudo apt-get install dataset-fashion-mnist" >&2
exit 1
