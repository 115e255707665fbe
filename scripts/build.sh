#!/bin/bash
# Configure and build diskserve in ./build (out of tree).  Extra arguments
# go to configure, e.g. --enable-sanitizers.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
builddir=${BUILDDIR:-$top/build}
cd "$top"
[ -x configure ] && [ configure -nt configure.ac ] || autoreconf -fi
mkdir -p "$builddir"
cd "$builddir"
[ -f Makefile ] || "$top/configure" --enable-werror "$@"
make -j"$(nproc)"
