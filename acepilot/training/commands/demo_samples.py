"""The positions `acepilot demo` completes when no file is given: a short tour.

Each is a small file in one of the default model's languages with a cursor
(`CURSOR`) where a developer would pause: at the end of the file (prefix only)
or inside it (the code after the cursor is the suffix a fill-in-the-middle
model reads). They are ordinary code, not chosen from the model's training
files; the README's examples are this tour's output.
"""

from __future__ import annotations

from dataclasses import dataclass

CURSOR = "<CURSOR>"


@dataclass(frozen=True, kw_only=True)
class DemoSample:
    filename: str
    language: str
    text: str  # with CURSOR once

    @property
    def has_suffix(self) -> bool:
        return bool(self.text.split(CURSOR, 1)[1].strip())

    def split(self) -> tuple[str, int, int]:
        """The text without the marker, and the cursor's 0-based line and column."""
        before, after = self.text.split(CURSOR, 1)
        lines = before.split("\n")
        return before + after, len(lines) - 1, len(lines[-1])


SAMPLES: tuple[DemoSample, ...] = (
    DemoSample(
        filename="walk.py",
        language="Python",
        text='''\
import os


def find_python_files(root):
    """Return the paths of the Python files under root, sorted."""
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            if name.endswith(".py"):
                paths.append(os.path.<CURSOR>''',
    ),
    DemoSample(
        filename="point.py",
        language="Python",
        text="""\
class Point:
    def __init__(self, x, y):
        self.x = x
        <CURSOR>

    def __repr__(self):
        return f"Point({self.x}, {self.y})"
""",
    ),
    DemoSample(
        filename="config.js",
        language="JavaScript",
        text="""\
const fs = require("fs");
const path = require("path");

function readConfig(dir) {
  const file = path.join(dir, "config.json");
  if (!fs.existsSync(file)) {
    return {};
  }
  return JSON.parse(fs.readFileSync(file, <CURSOR>""",
    ),
    DemoSample(
        filename="users.ts",
        language="TypeScript",
        text="""\
export interface User {
  id: number;
  name: string;
}

export function findUser(users: User[], id: number): User | undefined {
  return users.<CURSOR>
}
""",
    ),
    DemoSample(
        filename="files.go",
        language="Go",
        text="""\
package files

import (
	"io"
	"os"
)

// ReadAll returns the contents of the named file.
func ReadAll(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return <CURSOR>""",
    ),
    DemoSample(
        filename="main.rs",
        language="Rust",
        text="""\
use std::env;

fn main() {
    let args: Vec<String> = env::args().<CURSOR>
    if args.len() < 2 {
        eprintln!("usage: greet NAME");
        std::process::exit(1);
    }
    println!("Hello, {}!", args[1]);
}
""",
    ),
)
