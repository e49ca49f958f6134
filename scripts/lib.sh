# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables set here are read by the scripts that source it
# Shared helpers for the scripts in scripts/.  Sourced, never executed.
#
# Every path derives from the repository root; PYCORO_BUILD_DIR overrides
# the build directory (default: <repo>/build).  Nested scripts share the
# start time (PYCORO_T0) so the elapsed times in phase lines add up.

if [[ -n "${PYCORO_LIB_SOURCED:-}" ]]; then
    return 0
fi
PYCORO_LIB_SOURCED=1

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPTS_DIR="$REPO_ROOT/scripts"

BUILD_DIR="${PYCORO_BUILD_DIR:-$REPO_ROOT/build}"
BUILD_DIR="$(realpath -m "$BUILD_DIR")"
export PYCORO_BUILD_DIR="$BUILD_DIR"

LOG_DIR="$BUILD_DIR/logs"
DOWNLOAD_DIR="$BUILD_DIR/downloads"
SRC_DIR="$BUILD_DIR/src"
OBJ_DIR="$BUILD_DIR/obj"
PATCH_DIR="$REPO_ROOT/cpython-patches"
SERIES_FILE="$PATCH_DIR/series"

# The one CPython this project builds on (see README, "CPython source").
CPYTHON_VERSION="3.13.5"
CPYTHON_DEB_VERSION="3.13.5-2+deb13u5"
CPYTHON_TARBALL="python3.13_${CPYTHON_VERSION}.orig.tar.xz"
CPYTHON_SHA256="93e583f243454e6e9e4588ca2c2662206ad961659863277afcdb96801647d640"
PY_XY="3.13"

# Stable paths other people rely on.
CPYTHON_PREFIX="$BUILD_DIR/cpython"
CPYTHON_BIN="$CPYTHON_PREFIX/bin/python$PY_XY"
VENV_DIR="$BUILD_DIR/venv"
VENV_PY="$VENV_DIR/bin/python"

: "${PYCORO_T0:=$(date +%s)}"
export PYCORO_T0

# Colour only on a terminal.
if [[ -t 1 ]]; then
    _C_BOLD=$'\033[1m' _C_RED=$'\033[31m' _C_GREEN=$'\033[32m' _C_OFF=$'\033[0m'
else
    _C_BOLD='' _C_RED='' _C_GREEN='' _C_OFF=''
fi

elapsed() {
    local s=$(( $(date +%s) - PYCORO_T0 ))
    printf '%02d:%02d' $((s / 60)) $((s % 60))
}

# phase "message": one line per step, with the time since the first script
# of this run started.
phase() {
    printf '%s==> [%s] %s%s\n' "$_C_BOLD" "$(elapsed)" "$*" "$_C_OFF"
}

info() { printf '    %s\n' "$*"; }
warn() { printf '%swarning:%s %s\n' "$_C_RED" "$_C_OFF" "$*" >&2; }

die() {
    printf '%serror:%s %s\n' "$_C_RED" "$_C_OFF" "$*" >&2
    exit 1
}

ok() { printf '%s    ok%s %s\n' "$_C_GREEN" "$_C_OFF" "$*"; }

# usage_from_header FILE: print the leading comment block of a script
# (after the shebang) as its --help text.
usage_from_header() {
    sed -n '2,/^[^#]/{/^#/!q;s/^# \{0,1\}//;p}' "$1"
}

# handle_help "$@": print --help and exit when asked.
handle_help() {
    local a
    for a in "$@"; do
        case "$a" in
            -h | --help)
                usage_from_header "$0"
                exit 0
                ;;
        esac
    done
}

# run_logged LOGNAME WHAT CMD...: run CMD with stdout+stderr into
# $LOG_DIR/LOGNAME.log; on failure print the log's tail and exit.
run_logged() {
    local name="$1" what="$2"
    shift 2
    local log="$LOG_DIR/$name.log"
    mkdir -p "$LOG_DIR"
    {
        printf '### %s\n### %s\n### started %s\n' "$what" "$*" "$(date -Is)"
    } >"$log"
    local rc=0
    "$@" >>"$log" 2>&1 || rc=$?
    if ((rc != 0)); then
        fail_with_log "$log" "$what failed (exit $rc)"
    fi
}

# fail_with_log LOG MESSAGE: print the tail of LOG and die with MESSAGE.
fail_with_log() {
    local log="$1" msg="$2"
    {
        printf '%s---- last 40 lines of %s ----%s\n' "$_C_RED" "$log" "$_C_OFF"
        tail -n 40 "$log" || true
        printf '%s---- end of %s ----%s\n' "$_C_RED" "$log" "$_C_OFF"
    } >&2
    die "$msg (full log: $log)"
}

need_cmd() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 ||
            die "'$c' is not installed; it is needed here (install it, e.g. with apt-get install $c)"
    done
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# ---------------------------------------------------------------------------
# Debian packages

_APT_UPDATED=""

# apt_ensure PKG...: install the packages that are not installed yet.
# Runs 'apt-get update' once per process, and only if something is missing.
apt_ensure() {
    local missing=() p
    if ! command -v dpkg >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
        warn "no dpkg/apt-get here: make sure the equivalents of these Debian packages are installed: $*"
        return 0
    fi
    for p in "$@"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    info "installing missing Debian packages: ${missing[*]}"
    local sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null 2>&1 ||
            die "missing Debian packages: ${missing[*]} (not root and no sudo: install them first)"
        sudo=(sudo)
    fi
    if [[ -z "$_APT_UPDATED" ]]; then
        run_logged apt-update "apt-get update" "${sudo[@]}" apt-get update
        _APT_UPDATED=1
    fi
    run_logged apt-install "apt-get install ${missing[*]}" \
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}"
}

# The build dependencies of CPython (all optional modules);
# netbase (/etc/services) for the regression tests' getaddrinfo() calls.
CPYTHON_BUILD_DEPS=(
    build-essential pkg-config xz-utils rsync netbase
    libffi-dev libssl-dev zlib1g-dev libbz2-dev liblzma-dev libsqlite3-dev
    libreadline-dev libncurses-dev uuid-dev libgdbm-dev libgdbm-compat-dev tk-dev

)
# The ASan and UBSan runtimes gcc links with -fsanitize=address,undefined
# (build-essential brings them through gcc; named so a gcc-less
# toolchain says what is missing).
SANITIZER_BUILD_DEPS=(libasan8 libubsan1)
# The ThreadSanitizer runtime of gcc -fsanitize=thread.
TSAN_BUILD_DEPS=(libtsan2)
# A 32-bit toolchain, for the i386 layout check of tests/test_abi.py.
if [[ "$(dpkg --print-architecture 2>/dev/null)" == amd64 ]]; then
    CPYTHON_BUILD_DEPS+=(gcc-multilib)
fi

# mirror_uri: the Debian mirror this machine's apt already uses.  Read from
# the system's own configuration so no host name is written in the repo.
mirror_uri() {
    local uri=""
    if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
        # First URIs: line of a stanza that is not the security archive.
        uri="$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' \
            /etc/apt/sources.list.d/debian.sources)"
    fi
    if [[ -z "$uri" && -r /etc/apt/sources.list ]]; then
        uri="$(awk '/^deb(-src)?[ \t]/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { if ($i !~ /security/) { print $i; exit } } }' \
            /etc/apt/sources.list)"
    fi
    [[ -n "$uri" ]] || die "no Debian mirror found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list (set CPYTHON_SRC to a CPython $CPYTHON_VERSION tarball or tree instead)"
    printf '%s\n' "$uri"
}

# ---------------------------------------------------------------------------
# CPython variants: release (patched), debug (patched, --with-pydebug),
# asan (patched, --with-pydebug + AddressSanitizer + UndefinedBehaviorSanitizer),
# ft (patched, free-threaded: --disable-gil, a release build), tsan (patched,
# free-threaded, --with-pydebug + ThreadSanitizer, as CPython's own TSan CI
# builds it), pristine (no patches) and pristine-ft (no patches,
# free-threaded release: the baseline of the ft benchmarks).

# select_variant NAME: sets VARIANT, VAR_SRC, VAR_OBJ, VAR_PREFIX, VAR_VENV,
# VAR_PATCHED (1/0) and VAR_CONFIG_OPTS (array).
select_variant() {
    VARIANT="$1"
    case "$VARIANT" in
        release)
            VAR_SRC="$SRC_DIR/cpython-patched"
            VAR_OBJ="$OBJ_DIR/cpython"
            VAR_PREFIX="$BUILD_DIR/cpython"
            VAR_VENV="$BUILD_DIR/venv"
            VAR_PATCHED=1
            ;;
        debug)
            VAR_SRC="$SRC_DIR/cpython-patched"
            VAR_OBJ="$OBJ_DIR/cpython-debug"
            VAR_PREFIX="$BUILD_DIR/cpython-debug"
            VAR_VENV="$BUILD_DIR/venv-debug"
            VAR_PATCHED=1
            ;;
        asan)
            VAR_SRC="$SRC_DIR/cpython-patched"
            VAR_OBJ="$OBJ_DIR/cpython-asan"
            VAR_PREFIX="$BUILD_DIR/cpython-asan"
            VAR_VENV="$BUILD_DIR/venv-asan"
            VAR_PATCHED=1
            ;;
        ft)
            VAR_SRC="$SRC_DIR/cpython-patched"
            VAR_OBJ="$OBJ_DIR/cpython-ft"
            VAR_PREFIX="$BUILD_DIR/cpython-ft"
            VAR_VENV="$BUILD_DIR/venv-ft"
            VAR_PATCHED=1
            ;;
        tsan)
            VAR_SRC="$SRC_DIR/cpython-patched"
            VAR_OBJ="$OBJ_DIR/cpython-tsan"
            VAR_PREFIX="$BUILD_DIR/cpython-tsan"
            VAR_VENV="$BUILD_DIR/venv-tsan"
            VAR_PATCHED=1
            ;;
        pristine)
            VAR_SRC="$SRC_DIR/cpython-pristine"
            VAR_OBJ="$OBJ_DIR/cpython-pristine"
            VAR_PREFIX="$BUILD_DIR/cpython-pristine"
            VAR_VENV="$BUILD_DIR/venv-pristine"
            VAR_PATCHED=0
            ;;
        pristine-ft)
            VAR_SRC="$SRC_DIR/cpython-pristine"
            VAR_OBJ="$OBJ_DIR/cpython-pristine-ft"
            VAR_PREFIX="$BUILD_DIR/cpython-pristine-ft"
            VAR_VENV="$BUILD_DIR/venv-pristine-ft"
            VAR_PATCHED=0
            ;;
        *) die "unknown variant '$VARIANT'" ;;
    esac
    VAR_CONFIG_OPTS=(
        "--prefix=$VAR_PREFIX"
        --enable-shared
        "LDFLAGS=-Wl,-rpath,$VAR_PREFIX/lib"
    )
    case "$VARIANT" in
        debug) VAR_CONFIG_OPTS+=(--with-pydebug) ;;
        asan)
            # --with-pydebug too: C assert()s and Py_DEBUG's own checks
            # (negative refcounts, a NULL thread state, the GC's object
            # consistency checks) catch what the sanitizers cannot see.
            # pymalloc is off under --with-address-sanitizer, so every
            # object is a malloc() block that ASan watches.
            VAR_CONFIG_OPTS+=(--with-pydebug --with-address-sanitizer
                --with-undefined-behavior-sanitizer)
            ;;
        # The free-threaded build installs python3.13t (and a python3
        # link); its extensions are cpython-313t.
        ft | pristine-ft) VAR_CONFIG_OPTS+=(--disable-gil) ;;
        # What CPython's TSan CI configures (.github/workflows/
        # reusable-tsan.yml: --with-thread-sanitizer --with-pydebug
        # --disable-gil); its tests run with the suppressions of
        # Tools/tsan/suppressions_free_threading.txt (tsan_env).
        tsan) VAR_CONFIG_OPTS+=(--disable-gil --with-pydebug --with-thread-sanitizer) ;;
    esac
    VAR_PY="$VAR_PREFIX/bin/python$PY_XY"
    # (An if, not `[[ ]] &&`: the last command's status is the function's,
    # and under set -e a false test would end every other variant's caller.)
    # A free-threaded build installs python3.13t; a free-threaded
    # --with-pydebug one python3.13td (its LDVERSION) and no python3.13t.
    case "$VARIANT" in
        ft | pristine-ft) VAR_PY+=t ;;
        tsan) VAR_PY+=td ;;
    esac
}

# sanitizer_env: the ASan/UBSan runtime options for running anything with
# the asan variant (its build steps, the harness build, scripts/sanitize):
# any report aborts the process, so it fails whatever ran it.  Leak checking
# is off by default (PYCORO_ASAN_OPTIONS=detect_leaks=1 turns it on): it is
# clean for test_capi.test_native_coro, not checked over the pytest suite
# (third-party wheels, Rust statics).
sanitizer_env() {
    export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:print_summary=1${PYCORO_ASAN_OPTIONS:+:$PYCORO_ASAN_OPTIONS}"
    export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1:print_summary=1${PYCORO_UBSAN_OPTIONS:+:$PYCORO_UBSAN_OPTIONS}"
}

# tsan_env SRC: the ThreadSanitizer options for the tsan variant, as
# CPython's TSan CI sets them: the suppressions of SRC's
# Tools/tsan/suppressions_free_threading.txt (races upstream knows of in
# 3.13t), every report printed (halt_on_error=0: a run shows all of them),
# and the process's exit status left alone (exitcode=0: scripts/sanitize
# counts the reports in the report files, not by exit status).
# PYCORO_TSAN_OPTIONS is appended.
tsan_env() {
    local supp="$1/Tools/tsan/suppressions_free_threading.txt"
    [[ -f "$supp" ]] || die "$supp is missing (not a CPython 3.13 source tree?)"
    export TSAN_OPTIONS="suppressions=$supp:handle_segv=0:halt_on_error=0:exitcode=0:second_deadlock_stack=1${PYCORO_TSAN_OPTIONS:+:$PYCORO_TSAN_OPTIONS}"
}

# regrtest PY ARGS...: PY -m test ARGS, as the regression tests need it run:
# without PYTHONUNBUFFERED and PYTHONDONTWRITEBYTECODE (with them set,
# unrelated tests fail on stock CPython too), and with SIGINT's default
# action.  A non-interactive shell starts its background jobs (`cmd &`, and
# so whatever a CI runner or a helper starts that way) with SIGINT ignored;
# the ignoring is inherited across exec, a CPython that starts with SIGINT
# ignored installs no KeyboardInterrupt handler, and test_generators'
# SignalAndYieldFromTest.test_raise_and_yield_from (raise(SIGINT), expects
# KeyboardInterrupt in the inner generator) then fails every time, on an
# unpatched CPython as well ('FAILED' != 'PASSED').  Bash cannot undo an
# ignored-at-entry signal, so PY itself resets it and execs the test run.
regrtest() {
    local py="$1"
    shift
    env -u PYTHONUNBUFFERED -u PYTHONDONTWRITEBYTECODE "$py" -c '
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.execv(sys.executable, [sys.executable, "-m", "test", *sys.argv[1:]])' "$@"
}

# ---------------------------------------------------------------------------
# Checks (scripts/test, scripts/sanitize): each one runs, is timed and
# recorded; print_summary prints the table and fails if any check failed.
# The log of check NAME is build/logs/$CHECK_LOG_PREFIX-NAME.log.

CHECK_LOG_PREFIX=test
declare -a RESULTS=()
n_pass=0 n_fail=0 n_skip=0
record() { # record NAME STATUS [NOTE]
    RESULTS+=("$(printf '%-10s %-7s %s' "$1" "$2" "${3:-}")")
    case "$2" in
        passed) n_pass=$((n_pass + 1)) ;;
        FAILED) n_fail=$((n_fail + 1)) ;;
        *) n_skip=$((n_skip + 1)) ;;
    esac
}

# check NAME DESCRIPTION CMD...: run one check; its output goes to the
# terminal and to build/logs/$CHECK_LOG_PREFIX-NAME.log.
check() {
    local name="$1" what="$2"
    shift 2
    local log="$LOG_DIR/$CHECK_LOG_PREFIX-$name.log" t0 rc
    t0=$(date +%s)
    phase "$what (log: $log)"
    mkdir -p "$LOG_DIR"
    printf '### %s\n### %s\n' "$what" "$*" >"$log"
    set +e
    (cd "$REPO_ROOT" && "$@") 2>&1 | tee -a "$log"
    rc="${PIPESTATUS[0]}"
    set -e
    local dt=$(($(date +%s) - t0))
    if ((rc == 0)); then
        record "$name" passed "${dt}s"
    else
        record "$name" FAILED "exit $rc after ${dt}s, log: $log"
        printf '%s: FAILED (exit %d), full output in %s\n' "$name" "$rc" "$log" >&2
    fi
    return 0
}

# quiet_check: like check, for tools whose output only matters on failure.
quiet_check() {
    local name="$1" what="$2"
    shift 2
    local log="$LOG_DIR/$CHECK_LOG_PREFIX-$name.log" t0 rc=0
    t0=$(date +%s)
    phase "$what (log: $log)"
    mkdir -p "$LOG_DIR"
    printf '### %s\n### %s\n' "$what" "$*" >"$log"
    (cd "$REPO_ROOT" && "$@") >>"$log" 2>&1 || rc=$?
    local dt=$(($(date +%s) - t0))
    if ((rc == 0)); then
        record "$name" passed "${dt}s"
    else
        tail -n 60 "$log" >&2
        record "$name" FAILED "exit $rc after ${dt}s, log: $log"
    fi
    return 0
}

# print_summary: the table of recorded checks; returns 1 if any failed.
print_summary() {
    phase "summary"
    local r
    for r in "${RESULTS[@]}"; do
        printf '    %s\n' "$r"
    done
    printf 'phases: %d passed, %d failed, %d skipped\n' "$n_pass" "$n_fail" "$n_skip"
    ((n_fail == 0))
}

# ---------------------------------------------------------------------------

# series_entries: the patch file names listed in cpython-patches/series, in
# order (comments and blank lines skipped; a quilt "-p1" option ignored).
series_entries() {
    [[ -f "$SERIES_FILE" ]] || return 0
    sed -e 's/#.*//' -e 's/[[:space:]]\{1,\}-p[0-9]*//' -e 's/^[[:space:]]*//' \
        -e 's/[[:space:]]*$//' "$SERIES_FILE" | grep -v '^$' || true
}

# source_identity: what identifies the unpatched source: the tarball's
# sha256, or for a CPYTHON_SRC directory its git HEAD plus uncommitted
# changes (or, outside git, its file list with sizes and times).
source_identity() {
    local src
    src="$(cpython_source_path)"
    if [[ -d "$src" ]]; then
        if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
            printf 'git %s %s\n' "$(git -C "$src" rev-parse HEAD)" \
                "$( (git -C "$src" diff HEAD; git -C "$src" status --porcelain) | sha256sum | cut -d' ' -f1)"
        else
            printf 'dir %s\n' "$( (cd "$src" && find . -type f -printf '%P %s %T@\n' | LC_ALL=C sort) | sha256sum | cut -d' ' -f1)"
        fi
    elif [[ -f "$src" ]]; then
        if [[ "$src" == "$DOWNLOAD_DIR/$CPYTHON_TARBALL" ]]; then
            printf 'tarball %s\n' "$CPYTHON_SHA256"   # verified by fetch-cpython
        else
            printf 'tarball %s\n' "$(sha256_of "$src")"
        fi
    else
        die "CPython source not found at $src (run scripts/fetch-cpython, or set CPYTHON_SRC)"
    fi
}

# patch_set_hash: one hash over the source, the series file and every patch
# it lists (with names, in order).  Changes whenever the patch set changes.
patch_set_hash() {
    {
        source_identity
        local p
        while IFS= read -r p; do
            printf 'patch %s\n' "$p"
            if [[ -f "$PATCH_DIR/$p" ]]; then
                sha256_of "$PATCH_DIR/$p"
            else
                printf 'MISSING\n'
            fi
        done < <(series_entries)
    } | sha256sum | cut -d' ' -f1
}

# cpython_tarball: path of the verified tarball (after scripts/fetch-cpython),
# or the CPYTHON_SRC directory.
cpython_source_path() {
    if [[ -n "${CPYTHON_SRC:-}" ]]; then
        printf '%s\n' "$CPYTHON_SRC"
    else
        printf '%s\n' "$DOWNLOAD_DIR/$CPYTHON_TARBALL"
    fi
}

# cargo_env: the environment cargo needs to find the patched interpreter.
cargo_env() {
    export PYO3_PYTHON="$CPYTHON_BIN"
    # Tests that embed libpython find it through the rpath of the
    # interpreter's build; LD_LIBRARY_PATH covers binaries cargo links.
    export LD_LIBRARY_PATH="$CPYTHON_PREFIX/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}
