"""The test programs: prompt + completion + tests, wrapped so that only finished tests pass.

A sample passes only when the harness's own code, placed where candidate code
cannot pre-empt it, reports that the tests returned: it reads a per-sample
secret from fd 3 before any candidate code runs (and drains it: fd 3 then
gives nothing), and only after the tests returned writes `ACEPILOT-DONE
<secret>` to fd 4 (supervisor.py creates both pipes; the secret is never on
disk, in argv or in the environment). An exit with status 0 anywhere before
that — `sys.exit(0)`, `os._exit(0)`, an atexit handler, `process.exit(0)`,
`exit(0)`, `System.exit(0)`, `Runtime.halt(0)`, `os.Exit(0)`,
`std::process::exit(0)` — leaves no report and fails.

Per language, where the candidate runs relative to the harness code:

- Python: `harness.py` reads the secret, reads and deletes `main.py`, runs it
  with `exec` in a fresh namespace, and reports only if it returned normally,
  the marker call after the tests ran, the builtins are the same objects as
  before (no `abs`/`print`/`isinstance` swapped), and no trace function is set.
- JavaScript: `harness.js` reads the secret, defines a frozen, non-writable,
  non-configurable global `acepilot_<tag>` (tag: random per sample, drawn
  after the completion exists, so no completion can name it), freezes `JSON`
  and `Math`, loads `main.js` (then deletes it) with code generation from
  strings disabled (no `eval`: a candidate cannot declare a shadowing binding
  at run time), and reports after the marker call. The tests'
  `console.assert(` becomes `acepilot_<tag>.check(`, which throws, so
  overriding or shadowing `console` changes nothing.
- C++: a constructor of priority 101, placed before the prompt, reads the
  secret; the test's `main` is renamed and called by the harness's `main`.
  Every macro the completion defined, redefined or removed is undone (against
  the prompt alone, from `g++ -E -dM`) for each name the tests and the harness
  use, so `#define assert(x)` or `#define has_close_elements(...) true` has no
  effect on them.
- Java: the candidate is `Solution.java`, the tests `Main.java` (with
  single-type imports for the library classes they name, so a candidate class
  named `Arrays` or `List` cannot stand in for them), and `Acepilot_<tag>`'s
  `main` reads the secret, calls `Main.main` and reports; the secret is a local
  variable (not reachable by reflection).
- Go: `0acepilot_test.go` (initialised before the candidate's file) reads the
  secret in a package-level variable with a random name, and its `TestMain`
  reports only when `m.Run()` returned 0.
- Rust: compiled without libtest (`#![no_main]`): the harness's C `main`
  reads the secret, calls the test function inside `catch_unwind`, and
  reports if it returned; the tests' macros are called by path
  (`::std::assert_eq!`), so a candidate's `macro_rules! assert_eq` is ignored.

What this does not stop (docs/evaluation.md): code written against this
harness that reads its own process's memory or introspects the harness's
frames (Python), or that makes the tests' comparisons true with a wrong answer
(an object whose `__eq__` is always true, a Rust type shadowing `Vec`).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from acepilot.training.eval.sandbox import SampleError

CPP_HEADERS = (
    "using namespace std;",
    "#include<stdlib.h>",
    "#include<algorithm>",
    "#include<math.h>",
    "#include<stdio.h>",
    "#include<vector>",
    "#include<string>",
    "#include<climits>",
    "#include<cstring>",
    "#include<iostream>",
    "#include<cassert>",
)
GO_PACKAGES = (
    "math",
    "strings",
    "fmt",
    "strconv",
    "time",
    "bytes",
    "regexp",
    "sort",
    "math/rand",
    "crypto/md5",
)
RUST_CRATE_USES = {"rand": "use rand::Rng;", "regex": "use regex::Regex;", "md5": "use md5;"}
RUST_STD_MACROS = (
    "assert",
    "assert_eq",
    "assert_ne",
    "debug_assert",
    "debug_assert_eq",
    "debug_assert_ne",
    "vec",
    "format",
    "print",
    "println",
    "eprint",
    "eprintln",
    "panic",
    "unreachable",
    "unimplemented",
    "todo",
    "matches",
    "write",
    "writeln",
)
# The library classes HumanEval-X's Java tests name (and common neighbours): imported
# by single-type imports, which a same-package candidate class cannot shadow.
JAVA_CLASSES = {
    "java.lang": (
        "String",
        "StringBuilder",
        "AssertionError",
        "Boolean",
        "Integer",
        "Long",
        "Double",
        "Float",
        "Character",
        "Math",
        "Object",
        "System",
        "Exception",
        "RuntimeException",
        "Throwable",
    ),
    "java.util": (
        "List",
        "ArrayList",
        "LinkedList",
        "Arrays",
        "Objects",
        "Map",
        "HashMap",
        "TreeMap",
        "Set",
        "HashSet",
        "TreeSet",
        "Optional",
        "Random",
        "Collections",
        "Iterator",
    ),
    "java.util.stream": ("Collectors", "Stream", "IntStream"),
    "java.math": ("BigInteger", "BigDecimal"),
    "java.security": ("MessageDigest", "NoSuchAlgorithmException"),
}
IDENTIFIER = re.compile(r"[A-Za-z_]\w*")

PYTHON_HARNESS = '''\
"""Acepilot HumanEval harness: runs main.py; reports on fd 4 only if its tests ran to the end."""
import builtins
import os
import sys


def _acepilot_run():
    secret = os.read(3, 256)
    os.close(3)
    write = os.write
    gettrace, getprofile = sys.gettrace, sys.getprofile
    with open("main.py", encoding="utf-8") as handle:
        source = handle.read()
    os.unlink("main.py")
    code = compile(source, "main.py", "exec")
    del source
    done = []
    before = dict(vars(builtins))
    namespace = {
        "__name__": "__main__",
        "__file__": "main.py",
        "__builtins__": builtins,
        "__acepilot_done_@TAG@": lambda: done.append(True),
    }
    exec(code, namespace)
    after = vars(builtins)
    same = after.keys() == before.keys() and all(after[k] is v for k, v in before.items())
    if done and same and gettrace() is None and getprofile() is None:
        write(4, b"ACEPILOT-DONE " + secret + b"\\n")


_acepilot_run()
'''

JS_HARNESS = """\
'use strict';
// Acepilot HumanEval harness: runs main.js; reports on fd 4 only if its tests ran to the end.
const fs = require('fs');
const path = require('path');
const Module = require('module');
const secret = (() => {
  const buffer = Buffer.alloc(256);
  let length = 0;
  try {
    length = fs.readSync(3, buffer, 0, buffer.length, null);
  } finally {
    fs.closeSync(3);
  }
  return Buffer.from(buffer.subarray(0, length));
})();
const writeSync = fs.writeSync;
let done = false;
const api = Object.freeze({
  check: Object.freeze(function check(ok) {
    if (!ok) {
      throw new Error('Assertion failed');
    }
  }),
  done: Object.freeze(function finished() {
    done = true;
  }),
});
Object.defineProperty(globalThis, 'acepilot_@TAG@', {
  value: api,
  writable: false,
  configurable: false,
  enumerable: false,
});
Object.freeze(JSON);
Object.freeze(Math);
const file = path.resolve('main.js');
const source = fs.readFileSync(file, 'utf8');
fs.unlinkSync(file);
const main = new Module(file, null);
main.filename = file;
main.paths = Module._nodeModulePaths(path.dirname(file));
process.mainModule = main; // require.main === module holds in main.js, as before
main._compile(source, file);
if (done) {
  writeSync(4, Buffer.concat([Buffer.from('ACEPILOT-DONE '), secret, Buffer.from('\\n')]));
}
"""

CPP_PROLOGUE = """\
#include <unistd.h>
static char acepilot_@TAG@_secret[256];
static long acepilot_@TAG@_length = 0;
__attribute__((constructor(101))) static void acepilot_@TAG@_receive() {
    acepilot_@TAG@_length = read(3, acepilot_@TAG@_secret, sizeof acepilot_@TAG@_secret);
    close(3);
}
"""

CPP_EPILOGUE = """
int main() {
    acepilot_@TAG@_tests();
    if (acepilot_@TAG@_length > 0) {
        static const char acepilot_@TAG@_tag[] = "ACEPILOT-DONE ";
        write(4, acepilot_@TAG@_tag, sizeof acepilot_@TAG@_tag - 1);
        write(4, acepilot_@TAG@_secret, acepilot_@TAG@_length);
        write(4, "\\n", 1);
    }
    return 0;
}
"""

JAVA_HARNESS = """\
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.lang.String;
import java.lang.Throwable;

public final class Acepilot_@TAG@ {
    public static void main(String[] args) throws Throwable {
        byte[] buffer = new byte[256];
        int length = 0;
        try (FileInputStream in = new FileInputStream("/proc/self/fd/3")) {
            for (int n; length < buffer.length && (n = in.read(buffer, length, buffer.length - length)) > 0; ) {
                length += n;
            }
        }
        Main.main(args);
        if (length > 0) {
            try (FileOutputStream out = new FileOutputStream("/proc/self/fd/4")) {
                out.write("ACEPILOT-DONE ".getBytes());
                out.write(buffer, 0, length);
                out.write(10);
            }
        }
    }
}
"""

GO_HARNESS = """\
package main

import (
	acepilotOs@TAG@ "os"
	acepilotTesting@TAG@ "testing"
)

var acepilotSecret@TAG@ = func() []byte {
	file := acepilotOs@TAG@.NewFile(3, "acepilot-secret")
	buffer := make([]byte, 256)
	n, _ := file.Read(buffer)
	file.Close()
	if n < 0 {
		n = 0
	}
	return buffer[:n]
}()

func TestMain(m *acepilotTesting@TAG@.M) {
	code := m.Run()
	if code == 0 && len(acepilotSecret@TAG@) > 0 {
		report := acepilotOs@TAG@.NewFile(4, "acepilot-report")
		report.Write(append(append([]byte("ACEPILOT-DONE "), acepilotSecret@TAG@...), 10))
		report.Close()
	}
	acepilotOs@TAG@.Exit(code)
}
"""

RUST_EPILOGUE = """
#[no_mangle]
pub extern "C" fn main(_argc: ::std::os::raw::c_int, _argv: *const *const ::std::os::raw::c_char) -> ::std::os::raw::c_int {
    let secret = {
        use ::std::io::Read;
        let mut file = unsafe { <::std::fs::File as ::std::os::unix::io::FromRawFd>::from_raw_fd(3) };
        let mut buffer = ::std::vec::Vec::new();
        let _ = file.read_to_end(&mut buffer);
        buffer
    };
    let finished = ::std::panic::catch_unwind(|| {
@CALLS@    });
    if finished.is_err() {
        return 101;
    }
    if !secret.is_empty() {
        use ::std::io::Write;
        let mut report = unsafe { <::std::fs::File as ::std::os::unix::io::FromRawFd>::from_raw_fd(4) };
        let mut line = b"ACEPILOT-DONE ".to_vec();
        line.extend_from_slice(&secret);
        line.push(10);
        let _ = report.write_all(&line);
    }
    0
}
"""


@dataclass(frozen=True)
class Program:
    """The files of one sample and what the toolchain needs to know about them."""

    files: dict[str, str]
    extra: dict[str, Any] = field(default_factory=dict)


def new_tag() -> str:
    """Random per sample, drawn after the completion exists: no completion can name
    the harness's identifiers (it is not a secret: the candidate may read it)."""
    return secrets.token_hex(6)


def generation_prompt(language: str, problem: Mapping[str, Any]) -> str:
    """What the model sees."""
    if language == "rust":
        return str(problem["prompt"]) + str(problem["declaration"])
    return str(problem["prompt"])


def assemble(
    language: str,
    problem: Mapping[str, Any],
    completion: str,
    *,
    tag: str,
    crates: frozenset[str] = frozenset(),
) -> Program:
    """prompt + completion + tests (as CodeGeeX assembles them), plus the harness."""
    prompt = generation_prompt(language, problem)
    test = str(problem["test"])
    build = {
        "python": _python,
        "js": _js,
        "cpp": _cpp,
        "java": _java,
        "go": _go,
        "rust": _rust,
    }.get(language)
    if build is None:
        raise ValueError(f"unknown language {language!r}")
    return build(problem, prompt, completion, test, tag, crates)


def _python(
    problem: Mapping[str, Any], prompt: str, completion: str, test: str, tag: str, _: frozenset[str]
) -> Program:
    source = prompt + completion + "\n" + test + "\n" + f"__acepilot_done_{tag}()\n"
    return Program({"main.py": source, "harness.py": PYTHON_HARNESS.replace("@TAG@", tag)})


def _js(
    problem: Mapping[str, Any], prompt: str, completion: str, test: str, tag: str, _: frozenset[str]
) -> Program:
    tests = re.sub(r"\bconsole\s*\.\s*assert\s*\(", f"acepilot_{tag}.check(", test)
    source = prompt + completion + "\n" + tests + "\n;acepilot_" + tag + ".done();\n"
    return Program({"main.js": source, "harness.js": JS_HARNESS.replace("@TAG@", tag)})


def _cpp(
    problem: Mapping[str, Any], prompt: str, completion: str, test: str, tag: str, _: frozenset[str]
) -> Program:
    header = "".join(line + "\n" for line in CPP_HEADERS if line not in prompt)
    prologue = CPP_PROLOGUE.replace("@TAG@", tag)
    tests = re.sub(r"\bint\s+main\s*\(\s*(void)?\s*\)", f"int acepilot_{tag}_tests()", test)
    epilogue = CPP_EPILOGUE.replace("@TAG@", tag)
    tail = tests + "\n" + epilogue
    base = header + prologue + "\n" + prompt + "\n"
    head = header + prologue + "\n" + prompt + completion + "\n"
    names = sorted(set(IDENTIFIER.findall(tail)))
    return Program({"base.cpp": base, "cand.cpp": head, "tail.cpp": tail}, {"names": names})


def _java(
    problem: Mapping[str, Any], prompt: str, completion: str, test: str, tag: str, _: frozenset[str]
) -> Program:
    used = set(IDENTIFIER.findall(test))
    imports = [line for line in prompt.splitlines() if line.strip().startswith("import ")]
    imports += [
        f"import {package}.{name};"
        for package, names in JAVA_CLASSES.items()
        for name in names
        if name in used
    ]
    main = "\n".join(dict.fromkeys(imports)) + "\n\n" + test + "\n"
    return Program(
        {
            "Solution.java": prompt + completion + "\n",
            "Main.java": main,
            f"Acepilot_{tag}.java": JAVA_HARNESS.replace("@TAG@", tag),
        },
        {"main_class": f"Acepilot_{tag}"},
    )


def _go(
    problem: Mapping[str, Any], prompt: str, completion: str, test: str, tag: str, _: frozenset[str]
) -> Program:
    imports = str(problem.get("import", ""))
    body = prompt.replace(imports, "") if imports else prompt
    setup = str(problem.get("test_setup", "package main\n"))
    # Go refuses unused imports: import what the code (not its comments) uses.
    code = strip_go_comments(body + completion)
    extra = [
        f'"{pkg}"'
        for pkg in GO_PACKAGES
        if pkg not in setup and re.search(rf"\b{pkg.split('/')[-1]}\.", code)
    ]
    block = ("import (\n" + "".join(f"    {p}\n" for p in extra) + ")\n") if extra else ""
    source = setup + "\n" + block + "\n" + body + completion + "\n" + test
    return Program({"0acepilot_test.go": GO_HARNESS.replace("@TAG@", tag), "main_test.go": source})


def _rust(
    problem: Mapping[str, Any],
    prompt: str,
    completion: str,
    test: str,
    tag: str,
    crates: frozenset[str],
) -> Program:
    test_fn = r"#\[test\]\s*(?://[^\n]*\n\s*)*fn\s+"  # comments may sit in between
    live = re.sub(r"/\*.*?\*/", "", test, flags=re.S)  # Rust/32's tests are commented out
    names = re.findall(test_fn + r"(\w+)", live)
    if not names or len(names) != live.count("#[test]"):
        # Never run a program whose tests were not all found: it would pass vacuously
        # (libtest, which the old harness used, passed Rust/32 with 0 tests run).
        raise SampleError(
            f"{problem.get('task_id')}: no runnable #[test] function in the problem's tests"
        )
    tests = re.sub(r"#\[cfg\(test\)\]\s*", "", test)
    tests = re.sub(test_fn, "pub fn ", tests)
    tests = re.sub(r"\bmod\s+tests\b", f"mod acepilot_{tag}_tests", tests)
    macros = "|".join(RUST_STD_MACROS)
    tests = re.sub(rf"(?<![\w:])({macros})!", r"::std::\1!", tests)
    calls = "".join(f"        acepilot_{tag}_tests::{name}();\n" for name in names)
    source = (
        "#![no_main]\n"
        + prompt
        + completion
        + "\n"
        + tests
        + RUST_EPILOGUE.replace("@CALLS@", calls)
    )
    for crate, use in RUST_CRATE_USES.items():
        if crate not in crates:
            source = source.replace(use + "\n", "")
    return Program({"main.rs": source}, {"tests": names})


def strip_go_comments(code: str) -> str:
    """Drop // line comments (prose such as "a list of strings." is not a package use)."""
    return "\n".join(line.split("//", 1)[0] for line in code.splitlines())
