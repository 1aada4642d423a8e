"""Vue single-file components from pinned npm packages: the corpus of the seed's story.

No Vue code exists on the machines Acepilot is developed on, but the npm registry is
reachable, and a few UI libraries ship their `.vue` sources in their npm tarballs.
`fetch_packages` gets each pinned package with `npm pack` (the registry's own client:
the tarball's integrity is checked against the pin), refuses any whose package.json
licence is not a permissive SPDX id, and unpacks only the package's source files (the
`keep` prefixes: components, hand-written JavaScript and type declarations, never the
bundles built from them, which would repeat the same code in compiled form) plus its
licence file and package.json into `<dest>/src/<package>/`, one corpus repository per
package. A second run finds each package unpacked with the same pin and does nothing.

    python -m acepilot.training.corpus.npm_fetch [DEST]   # or scripts/fetch-vue-corpus.sh

DEST defaults to ~/.cache/acepilot/vue-corpus; the run prints the files per extension
and the licences, and writes `<dest>/packages.json` (what was fetched, from where).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from acepilot.server.errors import AcepilotError

DEFAULT_DEST = "~/.cache/acepilot/vue-corpus"
# SPDX ids whose terms let the code be used to train a model and the model be shipped
PERMISSIVE = frozenset(
    {"MIT", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "ISC", "0BSD", "Unlicense", "Zlib"}
)
MARKER = ".acepilot-npm.json"
MAX_MEMBER_BYTES = 2_000_000  # a source file larger than this is data, not code


class NpmFetchError(AcepilotError):
    """A package could not be fetched, or is not permissively licensed."""


@dataclass(frozen=True)
class NpmPackage:
    name: str
    version: str
    integrity: str  # the registry's sha512 (npm pack --json), so a re-published tarball fails
    keep: tuple[str, ...]  # path prefixes inside the package that are hand-written sources

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"


# Pinned: MIT-licensed Vue component libraries whose tarballs carry their .vue sources.
# keen-ui is the smallest; the story's pipeline config holds it out for evaluation.
PACKAGES: tuple[NpmPackage, ...] = (
    NpmPackage(
        "primevue",
        "3.53.0",
        "sha512-mRqTPGGZX+3AQokaCCjxLVSNEjGEA7LaPdBT4qSpGEdMstK6vhUBCxgLH7IPjHudbaSi4Xo3CIO62pXQxbz8dQ==",
        ("",),  # .vue components and hand-written .d.ts sit beside the built index.js
    ),
    NpmPackage(
        "element-ui",
        "2.15.14",
        "sha512-2v9fHL0ZGINotOlRIAJD5YuVB8V7WKxrE9Qy7dXhRipa035+kF7WuU/z+tEmLVPBcJ0zt8mOu1DKpWcVzBK8IA==",
        ("packages/", "src/", "types/"),
    ),
    NpmPackage(
        "buefy",
        "0.9.29",
        "sha512-iJutB/ezTQcxqcKvKz129DzomMjNRGdy23lJBtoFQBG//2NveTcPkN/VRUF70z2WH3JB/5nmVeoxr8QOPcs42w==",
        ("src/",),
    ),
    NpmPackage(
        "keen-ui",
        "1.4.0",
        "sha512-/FRGOs1bdtJ4ebS6XzADmxvHtOsc1ELimaRX13N7b485zK8ct7stryOnB7w97Ng8+WB/vqzdnOHV2bd1F/VYPw==",
        ("src/",),
    ),
)
SOURCE_SUFFIXES = (".vue", ".ts", ".js", ".mjs", ".tsx", ".jsx")
BUILT = (".min.js", ".esm.js", ".cjs.js", ".umd.js", ".map")


def licence_of(package_json: dict[str, Any], spec: str) -> str:
    """The package's SPDX licence id, refusing anything not plainly permissive
    (a missing field, an expression, a custom `SEE LICENSE IN` file)."""
    licence = package_json.get("license")
    if isinstance(licence, dict):  # the old {"type": "MIT", "url": ...} form
        licence = licence.get("type")
    if not isinstance(licence, str) or licence.strip() not in PERMISSIVE:
        raise NpmFetchError(
            f"{spec}: licence {licence!r} is not one of {', '.join(sorted(PERMISSIVE))}; "
            "refusing to use it for training"
        )
    return licence.strip()


def wanted(path: str, package: NpmPackage) -> bool:
    """A hand-written source file under one of the package's `keep` prefixes."""
    if not any(path.startswith(prefix) for prefix in package.keep):
        return False
    if path.endswith(".d.ts"):
        return True
    if package.keep == ("",) and not path.endswith(".vue") and not path.endswith(".d.ts"):
        return False  # a package keeping everything ships built JavaScript beside its .vue
    return path.endswith(SOURCE_SUFFIXES) and not path.endswith(BUILT)


def unpack(tarball: Path, package: NpmPackage, dest: Path) -> dict[str, Any]:
    """Check the licence, then write the wanted members (and LICENSE, package.json) to
    `dest`; returns the record of what was kept. Member paths never leave `dest`."""
    with tarfile.open(tarball, "r:gz") as archive:
        members = {m.name.removeprefix("package/"): m for m in archive.getmembers() if m.isfile()}
        meta_member = members.get("package.json")
        if meta_member is None:
            raise NpmFetchError(f"{package.spec}: no package.json in {tarball.name}")
        meta_file = archive.extractfile(meta_member)
        assert meta_file is not None
        meta = json.load(io.TextIOWrapper(meta_file, encoding="utf-8"))
        if meta.get("name") != package.name or meta.get("version") != package.version:
            raise NpmFetchError(
                f"{tarball.name}: package.json says {meta.get('name')}@{meta.get('version')}, "
                f"not {package.spec}"
            )
        licence = licence_of(meta, package.spec)
        temp = dest.with_name(dest.name + ".partial")
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir(parents=True)
        extensions: Counter[str] = Counter()
        for path, member in sorted(members.items()):
            top = path.split("/")[0].lower()
            licence_file = "/" not in path and top.startswith(("license", "licence", "copying"))
            if not (licence_file or path == "package.json" or wanted(path, package)):
                continue
            if member.size > MAX_MEMBER_BYTES:
                continue
            target = (temp / path).resolve()
            if not target.is_relative_to(temp.resolve()) or ".." in Path(path).parts:
                raise NpmFetchError(f"{package.spec}: member {path!r} leaves the package")
            target.parent.mkdir(parents=True, exist_ok=True)
            data = archive.extractfile(member)
            assert data is not None
            target.write_bytes(data.read())
            if not licence_file and path != "package.json":
                extensions[".d.ts" if path.endswith(".d.ts") else Path(path).suffix] += 1
    record = {
        **asdict(package),
        "keep": list(package.keep),  # as JSON reads it back, so a rerun compares equal
        "licence": licence,
        "files": dict(sorted(extensions.items())),
    }
    (temp / MARKER).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(dest, ignore_errors=True)
    temp.rename(dest)
    return record


def integrity_of(tarball: Path) -> str:
    """npm's integrity string of a file: sha512, base64."""
    digest = hashlib.sha512(tarball.read_bytes()).digest()
    return "sha512-" + base64.b64encode(digest).decode()


def npm_pack(package: NpmPackage, tarballs: Path) -> Path:
    """`npm pack NAME@VERSION` into `tarballs` (reused when present); its integrity, fresh
    or cached, must equal the pin when one is set."""
    tarballs.mkdir(parents=True, exist_ok=True)
    name = package.name.lstrip("@").replace("/", "-")
    tarball = tarballs / f"{name}-{package.version}.tgz"
    if not tarball.is_file():
        npm = shutil.which("npm")
        if npm is None:
            raise NpmFetchError(
                "npm is not installed (apt-get install npm, or Node.js's installer)"
            )
        done = subprocess.run(
            [npm, "pack", package.spec, "--json", "--pack-destination", str(tarballs)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            lines = [line.removeprefix("npm error").strip() for line in done.stderr.splitlines()]
            # npm's first lines say what failed (code, reason); its last ones, where the log is
            tail = "; ".join(line for line in lines[:4] if line and not line.startswith("at "))[
                :400
            ]
            raise NpmFetchError(
                f"npm pack {package.spec} failed (exit {done.returncode}): {tail} — is the npm "
                "registry reachable (npm config get registry)?"
            )
        (tarballs / json.loads(done.stdout)[0]["filename"]).rename(tarball)
    found = integrity_of(tarball)
    if package.integrity and found != package.integrity:
        tarball.unlink()
        raise NpmFetchError(
            f"{package.spec}: integrity {found} does not match the pinned {package.integrity}"
        )
    return tarball


def fetch_packages(dest: Path, packages: Sequence[NpmPackage] = PACKAGES) -> list[dict[str, Any]]:
    """Every pinned package under `dest/src/<name>/` (skipped when already there)."""
    dest = dest.expanduser()
    records = []
    for package in packages:
        target = dest / "src" / package.name.lstrip("@").replace("/", "-")
        marker = target / MARKER
        if marker.is_file():
            record = json.loads(marker.read_text(encoding="utf-8"))
            if {k: record.get(k) for k in ("name", "version", "integrity", "keep")} == {
                "name": package.name,
                "version": package.version,
                "integrity": package.integrity,
                "keep": list(package.keep),
            }:
                records.append(record)
                continue
        records.append(unpack(npm_pack(package, dest / "tarballs"), package, target))
    (dest / "packages.json").write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")
    return records


def describe(records: Sequence[dict[str, Any]]) -> str:
    lines = []
    totals: Counter[str] = Counter()
    for r in records:
        files = ", ".join(f"{n} {ext}" for ext, n in r["files"].items())
        lines.append(f"{r['name']}@{r['version']} ({r['licence']}): {files}")
        totals.update(r["files"])
    lines.append("total: " + ", ".join(f"{n} {ext}" for ext, n in sorted(totals.items())))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", nargs="?", default=DEFAULT_DEST, help="cache directory")
    args = parser.parse_args(argv)
    try:
        records = fetch_packages(Path(args.dest))
    except NpmFetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(describe(records))
    print(f"sources: {Path(args.dest).expanduser() / 'src'}/<package>")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
