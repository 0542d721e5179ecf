#!/usr/bin/env bash
# Make sure Fashion-MNIST (Debian package dataset-fashion-mnist) is installed; offline-safe.
# Without it, pass --data-root DIR with the four IDX files to every command.
set -u
source "$(dirname "$0")/apt_install.sh"
apt_install dataset-fashion-mnist /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz 1
