#!/usr/bin/env bash
# benches/pyawaitable_bench/build.sh --python VENV_PYTHON --out DIR
#
# Build pawbench (pawbench.c: ready/await_ on PyAwaitable) and the C floor
# (benches/cfloor/cfloor.c, compiled as scripts/bench compiles it) for the
# interpreter of the venv VENV_PYTHON, into DIR.  Installs pyawaitable (the
# version pinned below, from the package index) into that venv when it is
# not there.  count.py then counts both beside async def:
#
#   PYTHONPATH=DIR VENV_PYTHON benches/pyawaitable_bench/count.py
#
# pawbench is compiled with -DNDEBUG, as setuptools compiles extensions for
# a release interpreter (its CFLAGS carry it): PyAwaitable 2.0.1's own
# assert() in PyAwaitable_SetResult() tests the type of the type and fails
# on every call otherwise.  Idempotent: recompiles and overwrites.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"
handle_help "$@"

PYAWAITABLE_PIN="2.0.1"
py="" out=""
while (($#)); do
    case "$1" in
        --python) py="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
[[ -n "$py" && -n "$out" ]] || die "--python and --out are required (see --help)"
"$py" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' ||
    die "$py is not a venv's python: pyawaitable is installed into it"
mkdir -p "$out"

if [[ "$("$py" -c 'import pyawaitable; print(pyawaitable.__version__)' 2>/dev/null || true)" != "$PYAWAITABLE_PIN" ]]; then
    phase "installing pyawaitable==$PYAWAITABLE_PIN into $py"
    "$py" -m pip install -q "pyawaitable==$PYAWAITABLE_PIN"
fi
include="$("$py" -c 'import sysconfig; print(sysconfig.get_path("include"))')"
paw_include="$("$py" -c 'import pyawaitable; print(pyawaitable.include())')"
suffix="$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
here="$REPO_ROOT/benches/pyawaitable_bench"
warnings=(-g -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers)

phase "compiling pawbench (PyAwaitable $PYAWAITABLE_PIN) and cfloor for $py into $out"
# -isystem: the warnings of pyawaitable.h are the library's, not ours.
${CC:-cc} -O2 -DNDEBUG -shared -fPIC "${warnings[@]}" -I"$include" -isystem "$paw_include" \
    "$here/pawbench.c" -o "$out/pawbench$suffix.tmp"
mv -f "$out/pawbench$suffix.tmp" "$out/pawbench$suffix"
${CC:-cc} -O2 -shared -fPIC "${warnings[@]}" -I"$include" \
    "$REPO_ROOT/benches/cfloor/cfloor.c" -o "$out/cfloor$suffix.tmp"
mv -f "$out/cfloor$suffix.tmp" "$out/cfloor$suffix"
ok "$out/pawbench$suffix, $out/cfloor$suffix"
