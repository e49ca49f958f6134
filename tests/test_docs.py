"""The C API as three texts state it must be one API.

The patched interpreter's installed headers (Include/cpython/genobject.h
and code.h: what an extension compiles against), the reference
documentation the series adds (Doc/c-api/*.rst in cpython-patches/) and
the proposal (docs/pep-native-coroutines.rst, its declaration blocks) are
written by hand, each in its own place.  These tests compare them token by
token: every declaration the documentation or the proposal shows must be
the header's, and every public name of the header's native-frame section
must be documented in both.
"""

import pathlib
import re
import sysconfig

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PATCHES = ROOT / "cpython-patches"
PEP = ROOT / "docs" / "pep-native-coroutines.rst"
INCLUDE = pathlib.Path(sysconfig.get_config_var("INCLUDEPY"))
GENOBJECT_H = INCLUDE / "cpython" / "genobject.h"
CODE_H = INCLUDE / "cpython" / "code.h"

pytestmark = pytest.mark.skipif(
    not GENOBJECT_H.exists()
    or "Py_HAVE_NATIVE_FRAMES" not in GENOBJECT_H.read_text(),
    reason="not a patched interpreter (no Py_HAVE_NATIVE_FRAMES in its headers)",
)

# The names the series makes public, as the header spells them.
PUBLIC_NAME = re.compile(r"\b(PyUnstable_\w+|Py_HAVE_NATIVE_FRAMES|CO_NATIVE)\b")


def tokens(text):
    """C tokens of text, comments removed, PyAPI_FUNC(T) read as T."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"PyAPI_FUNC\(([^()]*)\)", r"\1", text)
    return re.findall(r"\w+|\.\.\.|\S", text)


def joined(text):
    return " " + " ".join(tokens(text)) + " "


def header_text():
    return GENOBJECT_H.read_text() + "\n" + CODE_H.read_text()


def header_declarations():
    """The header without preprocessor lines, as one token string."""
    lines = [
        line for line in header_text().splitlines()
        if not line.lstrip().startswith("#")
    ]
    return joined("\n".join(lines))


def header_macros():
    return dict(re.findall(r"^#\s*define\s+(\w+)\s+(\S+)", header_text(), re.M))


def native_section_names():
    """Public names declared in the native-frame parts of the headers."""
    gen = GENOBJECT_H.read_text()
    start = gen.index("Native frames")
    code = CODE_H.read_text()
    # code.h: only what the series adds to it (its other PyUnstable_ names are stock)
    code = "\n".join(line for line in code.splitlines() if "NATIVE" in line.upper())
    declared = set()
    for text in (gen[start:], code):
        text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
        declared |= {
            name for name in PUBLIC_NAME.findall(text)
            # a declaration or definition, not a mention in a parameter type
            if re.search(
                rf"(#\s*define\s+{name}\b|\b{name}\s*\(|}}\s*{name}\s*;"
                rf"|\(\s*\*\s*{name}\s*\)|\b{name}\s*=)",
                text,
            )
        }
    return declared


def patch_doc_lines():
    """The lines of Doc/c-api/ as the whole series leaves them (added by
    one patch and not removed by a later one)."""
    kept = []
    for patch in sorted(PATCHES.glob("*.patch")):
        in_doc = False
        for line in patch.read_text().splitlines():
            if line.startswith("diff --git "):
                in_doc = " a/Doc/c-api/" in line
            elif not in_doc or line.startswith(("+++", "---")):
                continue
            elif line.startswith("+"):
                kept.append(line[1:])
            elif line.startswith("-") and line[1:] in kept:
                kept.remove(line[1:])
    return kept


def doc_directives(kind):
    pattern = re.compile(rf"^\s*\.\. c:{kind}:: (.+)$")
    return [m.group(1) for line in patch_doc_lines() if (m := pattern.match(line))]


def pep_declaration_blocks():
    """The PEP's literal blocks that declare the API (its specification)."""
    lines = PEP.read_text().splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if line.endswith("::") and not line.lstrip().startswith(".."):
            j = i + 1
            while j < len(lines) and (lines[j].startswith("   ") or not lines[j].strip()):
                j += 1
            block = "\n".join(lines[i + 1:j])
            if PUBLIC_NAME.search(block):
                blocks.append((i + 2, block))
            i = j
        else:
            i += 1
    return blocks


def split_declarations(block):
    """Top-level C declarations of a block, each ending with ';'."""
    decls, depth, current = [], 0, []
    for tok in tokens(re.sub(r"^\s*#.*$", "", block, flags=re.M)):
        current.append(tok)
        depth += tok in "({"
        depth -= tok in ")}"
        if tok == ";" and depth == 0:
            decls.append(" ".join(current))
            current = []
    assert not current, f"unterminated declaration: {' '.join(current)}"
    return decls


def test_the_pep_declares_the_headers_api():
    header = header_declarations()
    blocks = pep_declaration_blocks()
    assert len(blocks) >= 5, "the PEP's specification blocks were not found"
    seen = 0
    for lineno, block in blocks:
        for decl in split_declarations(block):
            assert f" {decl} " in header, (
                f"docs/pep-native-coroutines.rst:{lineno}: not as in "
                f"{GENOBJECT_H.name}/{CODE_H.name}: {decl}"
            )
            seen += 1
        for name, value in re.findall(r"^\s*#\s*define\s+(\w+)\s+(\S+)", block, re.M):
            assert header_macros().get(name) == value, f"PEP line {lineno}: {name} {value}"
    assert seen >= 9


def test_the_pep_gives_the_headers_macro_values():
    macros = header_macros()
    text = PEP.read_text()
    stated = re.findall(r"``(CO_NATIVE|PyUnstable_NATIVE_\w+)`` \(``(0x[0-9a-fA-F]+)``", text)
    assert stated, "the PEP states no flag value"
    for name, value in stated:
        assert int(macros[name], 16) == int(value, 16), (name, value, macros[name])


def test_the_reference_docs_declare_the_headers_functions():
    header = header_declarations()
    functions = doc_directives("function")
    assert len(functions) >= 7
    for signature in functions:
        assert f" {' '.join(tokens(signature))} ; " in header, signature


def test_the_reference_docs_declare_the_headers_types():
    header = header_declarations()
    types = doc_directives("type")
    assert any("(*PyUnstable_NativeStepFunc)" in t for t in types)
    for declaration in types:
        if "(" in declaration:  # a function pointer type: the typedef itself
            assert f" typedef {' '.join(tokens(declaration))} ; " in header, declaration
        else:
            assert re.search(rf"[}}] {re.escape(declaration)} ;", header), declaration


def test_the_reference_docs_list_the_definitions_fields_in_order():
    header = header_declarations()
    body = re.search(r" typedef struct \{ ([^{}]*) \} PyUnstable_NativeFrameDef ;", header)
    assert body, "PyUnstable_NativeFrameDef not found in the header"
    members = doc_directives("member")
    assert len(members) >= 7
    documented = " ".join(" ".join(tokens(m)) + " ;" for m in members)
    assert documented == body.group(1).strip()


def test_the_reference_docs_name_every_step_result():
    header = header_declarations()
    enum = re.search(r" typedef enum \{ ([^{}]*) \} PyUnstable_NativeStep ;", header)
    assert enum
    in_header = re.findall(r"(PyUnstable_NATIVE_\w+) =", enum.group(1))
    assert sorted(doc_directives("enumerator")) == sorted(in_header)


def test_every_public_name_is_documented_and_proposed():
    names = native_section_names()
    assert {"PyUnstable_Coro_NewNative", "PyUnstable_NativeFrameDef",
            "Py_HAVE_NATIVE_FRAMES", "CO_NATIVE"} <= names, names
    docs = "\n".join(patch_doc_lines())
    pep = PEP.read_text()
    for name in sorted(names):
        assert re.search(rf"\.\. c:\w+:: .*\b{name}\b", docs), f"{name}: not in Doc/c-api"
        assert re.search(rf"\b{name}\b", pep), f"{name}: not in the PEP"
    macros = header_macros()
    for name in doc_directives("macro"):
        assert name in macros, f"Doc/c-api documents a macro the header lacks: {name}"
