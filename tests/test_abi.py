"""The patched CPython keeps the public ABI of stock CPython 3.13.5.

Extension wheels built for stock 3.13 bake struct offsets into their
machine code, so the patch series may add API but must not move, resize or
remove anything public.  Two checks:

* ``tests/abi/layout.c`` is compiled against the pristine headers and
  against the patched, installed headers; the layouts it prints must be
  identical.
* numpy's binary cp313 wheel from PyPI (installed by scripts/build-cpython
  from requirements-test.txt with ``--only-binary numpy``) imports and
  computes correct results on the patched interpreter.

Run with the venv of the patched build: ``build/venv/bin/python -m pytest
tests/``.  The pristine headers come from ``scripts/build-cpython
--pristine`` (full build) or ``--pristine --configure-only`` (enough: the
source tree's Include/ plus the configured pyconfig.h), which scripts/test
runs.  ``PYCORO_PRISTINE_INCLUDE`` (directories separated by ``:``)
overrides where they are looked for.
"""

import difflib
import os
import shutil
import subprocess
import sys
import sysconfig
from fractions import Fraction
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
LAYOUT_C = REPO_ROOT / "tests" / "abi" / "layout.c"
BUILD_DIR = Path(os.environ.get("PYCORO_BUILD_DIR") or REPO_ROOT / "build")
PY_XY = f"{sys.version_info.major}.{sys.version_info.minor}"
# On the free-threaded build (3.13t) the installed pyconfig.h defines
# Py_GIL_DISABLED, which changes the public structs (PyObject's header
# first).  A pristine tree configured with --disable-gil differs from the
# default configure's pyconfig.h in that one line only, so the pristine
# headers of the default configure (scripts/test makes them) serve both
# builds: on 3.13t they are compiled with -DPy_GIL_DISABLED=1.
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
PRISTINE_CFLAGS = ["-DPy_GIL_DISABLED=1"] if FREE_THREADED else []
ABI_TAG = f"cp{sys.version_info.major}{sys.version_info.minor}" + (
    "t" if FREE_THREADED else "")


def pristine_include_dirs():
    """The -I directories of the pristine headers, or None with a reason."""
    env = os.environ.get("PYCORO_PRISTINE_INCLUDE")
    if env:
        dirs = [Path(d) for d in env.split(os.pathsep) if d]
        return dirs, "PYCORO_PRISTINE_INCLUDE"
    installed = BUILD_DIR / "cpython-pristine" / "include" / f"python{PY_XY}"
    if (installed / "pyconfig.h").is_file():
        return [installed], str(installed)
    src = BUILD_DIR / "src" / "cpython-pristine" / "Include"
    obj = BUILD_DIR / "obj" / "cpython-pristine"
    if (src / "Python.h").is_file() and (obj / "pyconfig.h").is_file():
        return [src, obj], f"{src} + {obj}/pyconfig.h"
    return None, (
        f"no pristine CPython headers under {BUILD_DIR} (neither "
        f"{installed} nor {src} with {obj}/pyconfig.h); make them with "
        "scripts/build-cpython --pristine --configure-only"
    )


def patched_include_dir():
    inc = Path(sysconfig.get_path("include"))
    assert (inc / "Python.h").is_file(), f"no Python.h in {inc}"
    return inc


def compiler():
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    cc = cc.split()
    if not shutil.which(cc[0]):
        pytest.fail(f"C compiler {cc[0]!r} not found (install build-essential)")
    return cc


def layout(include_dirs, tmp_path, name, cflags=()):
    """Compile and run layout.c against include_dirs; return its output."""
    exe = tmp_path / f"layout-{name}"
    cmd = [*compiler(), "-std=c11", "-O0", "-w", *cflags]
    cmd += [f"-I{d}" for d in include_dirs]
    cmd += [str(LAYOUT_C), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, (
        f"layout.c does not compile against the {name} headers "
        f"(a public struct field was removed or renamed?):\n"
        f"$ {' '.join(cmd)}\n{proc.stderr}"
    )
    return subprocess.run(
        [str(exe)], capture_output=True, text=True, check=True
    ).stdout


def test_public_struct_layout_unchanged(tmp_path):
    pristine, where = pristine_include_dirs()
    if pristine is None:
        pytest.skip(where)
    patched = patched_include_dir()
    before = layout(pristine, tmp_path, "pristine", PRISTINE_CFLAGS)
    after = layout([patched], tmp_path, "patched")
    assert "PyCoroObject.cr_iframe" in before  # the program printed something
    diff = "".join(
        difflib.unified_diff(
            before.splitlines(True),
            after.splitlines(True),
            f"pristine ({where})",
            f"patched ({patched})",
        )
    )
    assert before == after, "public struct layout differs:\n" + diff


# --- the same layouts on a 32-bit target --------------------------------------

# What pyconfig.h says about the target's types, measured with the 32-bit
# compiler itself (configure would measure the same).
_SIZE_PROBE = r"""
#define _FILE_OFFSET_BITS 64
#include <pthread.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <sys/types.h>
int main(void) {
    printf("SIZEOF_LONG %zu\n", sizeof(long));
    printf("SIZEOF_VOID_P %zu\n", sizeof(void *));
    printf("SIZEOF_SIZE_T %zu\n", sizeof(size_t));
    printf("SIZEOF_UINTPTR_T %zu\n", sizeof(uintptr_t));
    printf("SIZEOF_TIME_T %zu\n", sizeof(time_t));
    printf("SIZEOF_PTHREAD_T %zu\n", sizeof(pthread_t));
    printf("SIZEOF_LONG_DOUBLE %zu\n", sizeof(long double));
    printf("SIZEOF_OFF_T %zu\n", sizeof(off_t));
    printf("SIZEOF_FPOS_T %zu\n", sizeof(fpos_t));
    printf("ALIGNOF_LONG %zu\n", alignof(long));
    printf("ALIGNOF_SIZE_T %zu\n", alignof(size_t));
    printf("ALIGNOF_MAX_ALIGN_T %zu\n", alignof(max_align_t));
    return 0;
}
"""


def headers_for_m32(include_dirs, tmp_path, name):
    """Copies of include_dirs whose pyconfig.h describes an i386 target.

    The headers were configured for this 64-bit machine; only the type
    sizes in pyconfig.h differ on a 32-bit target of the same system, so
    they are rewritten with the values the -m32 compiler reports.  The
    directories are copied because Python.h includes "pyconfig.h" from its
    own directory first when it is there."""
    probe = tmp_path / "sizes.c"
    probe.write_text(_SIZE_PROBE)
    exe = tmp_path / "sizes-m32"
    proc = subprocess.run([*compiler(), "-m32", str(probe), "-o", str(exe)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip("no 32-bit C toolchain (Debian: gcc-multilib; "
                    "scripts/build-cpython installs it): " + proc.stderr[-300:])
    sizes = dict(line.split() for line in subprocess.run(
        [str(exe)], capture_output=True, text=True, check=True).stdout.splitlines())
    out = []
    for i, d in enumerate(include_dirs):
        dest = tmp_path / f"include-{name}-m32-{i}"
        shutil.copytree(d, dest, symlinks=True)
        config = dest / "pyconfig.h"
        if config.is_file():
            lines = []
            for line in config.read_text().splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[0] == "#define" and parts[1] in sizes:
                    line = f"#define {parts[1]} {sizes[parts[1]]}"
                lines.append(line)
            config.write_text("\n".join(lines) + "\n")
        out.append(dest)
    return out


def test_public_struct_layout_unchanged_on_32_bit(tmp_path):
    # On i386 the generator header has no padding before gi_iframe, so a
    # field added there would move it (36 -> 40): the native marker lives in
    # the interpreter frame's padding instead, and nothing public moves.
    pristine, where = pristine_include_dirs()
    if pristine is None:
        pytest.skip(where)
    patched = [patched_include_dir()]
    pristine32 = headers_for_m32(pristine, tmp_path, "pristine")
    patched32 = headers_for_m32(patched, tmp_path, "patched")
    before = layout(pristine32, tmp_path, "pristine-m32", ["-m32", *PRISTINE_CFLAGS])
    after = layout(patched32, tmp_path, "patched-m32", ["-m32"])
    assert "PyCoroObject.cr_iframe" in before
    assert "SIZEOF_VOID_P = 4\n" in before, before[:300]  # a 32-bit target
    diff = "".join(difflib.unified_diff(
        before.splitlines(True), after.splitlines(True),
        "pristine (-m32)", "patched (-m32)"))
    assert before == after, "public struct layout differs on 32-bit:\n" + diff


def test_numpy_binary_wheel_works():
    try:
        import numpy as np
    except ImportError as e:  # pragma: no cover - a broken setup
        pytest.fail(
            f"numpy does not import ({e}); scripts/build-cpython installs "
            "it into the venv from requirements-test.txt"
        )

    # It must be the wheel numpy built for stock CPython 3.13 (manylinux
    # tag; cp313t on the free-threaded build), not something compiled here
    # against the patched headers.
    from importlib.metadata import distribution

    dist = distribution("numpy")
    wheel = dist.read_text("WHEEL") or ""
    tags = [
        line.split(":", 1)[1].strip()
        for line in wheel.splitlines()
        if line.startswith("Tag:")
    ]
    assert any(
        t.startswith(f"cp313-{ABI_TAG}-manylinux") for t in tags
    ), f"numpy is not the binary {ABI_TAG} manylinux wheel (tags: {tags})"
    assert sys.prefix != sys.base_prefix, "run this with the venv's python"

    # Exact integer matrix product against pure Python.
    n = 24
    a = [[(i * 7 + j * 3) % 11 - 5 for j in range(n)] for i in range(n)]
    b = [[(i * 5 - j * 2) % 13 - 6 for j in range(n)] for i in range(n)]
    expected = [
        [sum(a[i][k] * b[k][j] for k in range(n)) for j in range(n)]
        for i in range(n)
    ]
    got = (np.array(a, dtype=np.int64) @ np.array(b, dtype=np.int64)).tolist()
    assert got == expected

    # Floating point through LAPACK: solve a well-conditioned system and
    # compare with an exact rational solution.
    m = 6
    A = [[Fraction(1, i + j + 1) + (m if i == j else 0) for j in range(m)] for i in range(m)]
    rhs = [Fraction(i + 1) for i in range(m)]
    x = np.linalg.solve(np.array(A, dtype=float), np.array(rhs, dtype=float))
    # Exact check: A @ x == rhs, with x from numpy rounded back.
    residual = max(
        abs(float(sum(A[i][k] * Fraction(float(x[k])) for k in range(m)) - rhs[i]))
        for i in range(m)
    )
    assert residual < 1e-12

    # numpy's C code driving Python generators and calling back into Python.
    def squares(k):
        for i in range(k):
            yield i * i

    arr = np.fromiter(squares(1000), dtype=np.int64)
    assert int(arr.sum()) == sum(i * i for i in range(1000))
    ufunc = np.frompyfunc(lambda u, v: u * 10 + v, 2, 1)
    assert ufunc(np.arange(3), np.arange(3)).tolist() == [0, 11, 22]

    # Reference counts and the garbage collector see numpy objects normally.
    import gc

    big = np.ones((256, 256))
    before = sys.getrefcount(big)
    views = [big[i] for i in range(10)]
    assert sys.getrefcount(big) == before + 10
    del views
    gc.collect()
    assert sys.getrefcount(big) == before
