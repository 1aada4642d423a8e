"""The model registry: immutable, verified entries and a production pointer per name.

Why one module over 600 lines: entry validation, commit and the production
pointer are the registry's trust boundary (strict JSON, sha256, no shared inodes,
atomic flips under one lock); they are audited together, and splitting them
would spread that boundary over several files.

Layout and manifest fields: docs/model-format.md. In short::

    <root>/<name>/<version>/    one immutable entry (v1, v2, ...) with manifest.json
    <root>/<name>/production    text file naming the production version
    <root>/.staging/            builds in progress

Writes are atomic: a build fills a staging directory (`Registry.stage`) and
`Registry.commit` renames it into place only when it is complete, so a failed
or killed build never leaves a half-written entry where readers look. The
production pointer is replaced with `os.replace`, so a reader sees the old
version or the new one, never an empty file.

Everything read back from disk is treated as untrusted input: the manifest is
validated field by field, file names may not leave the entry directory, and
`ModelEntry.verify` checks the sha256 of every file before a model is served.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from acepilot.server import __version__
from acepilot.server.errors import RegistryError
from acepilot.server.fim import FimFormat, RepoFormat
from acepilot.server.metrics_check import nonfinite_fields, reject_constant

log = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"
PRODUCTION = "production"
STAGING = ".staging"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
VERSION = re.compile(r"^v([1-9][0-9]{0,8})$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
KV_DTYPES = ("float32", "float16", "int8")
DEVICES = ("cpu", "cuda")
MAX_MANIFEST_BYTES = 16 << 20
MAX_POINTER_BYTES = 64  # "v123456789\n" fits many times over
FICLONE = 0x40049409  # linux/fs.h: share extents copy-on-write (btrfs, XFS, ...)
HASH_CHUNK = 8 << 20
COMMIT_ATTEMPTS = 100


def default_root() -> Path:
    """`$ACEPILOT_REGISTRY`, else `$XDG_DATA_HOME/acepilot/registry` (~/.local/share/...)."""
    explicit = os.environ.get("ACEPILOT_REGISTRY")
    if explicit:
        return Path(explicit).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home).expanduser() / "acepilot" / "registry"


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in chunks (model files are gigabytes)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def files_digest(files: Mapping[str, str]) -> str:
    """One sha256 that names a model's content: over its sorted (file name, sha256) pairs.

    Gates record it for what they evaluated and for the production they compared
    against; promotion refuses a model or a production whose digest differs.
    """
    return hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()


def copy_private(source: Path, target: Path) -> None:
    """Copy a file so that `target` shares no inode with `source`.

    A reflink (copy-on-write clone) where the filesystem supports it, a byte copy
    otherwise. Never a hard link: writing to the source in place must not change
    a registered model.
    """
    with source.open("rb") as src, target.open("xb") as dst:
        try:
            fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
            return
        except OSError:
            pass  # not supported here (ext4, tmpfs, across filesystems): copy the bytes
        shutil.copyfileobj(src, dst, HASH_CHUNK)


def version_number(version: str) -> int:
    match = VERSION.match(version)
    if not match:
        raise RegistryError(f"invalid version {version!r}: versions are v1, v2, ...")
    return int(match.group(1))


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise RegistryError(
            f"invalid model name {name!r}: use letters, digits and . _ + - "
            "(starting with a letter or digit, at most 128 characters)"
        )
    return name


@dataclass(frozen=True)
class ModelEntry:
    """One registry entry: its directory and its validated manifest."""

    path: Path
    manifest: dict[str, Any]

    @classmethod
    def load(cls, path: Path) -> ModelEntry:
        """Read and validate `path/manifest.json`; check that every listed file exists.

        The files' hashes are checked by `verify` (it reads every byte).
        """
        path = Path(path)
        if not path.is_dir():
            raise RegistryError(f"{path}: not a registry entry directory")
        manifest_path = path / MANIFEST
        if manifest_path.is_symlink():
            raise RegistryError(
                f"{manifest_path}: a symbolic link; an entry's manifest must be its own file"
            )
        if not manifest_path.is_file():
            raise RegistryError(
                f"{path}: no {MANIFEST} (not a registry entry, or an incomplete copy of one)"
            )
        if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
            raise RegistryError(f"{manifest_path}: implausibly large manifest")
        manifest = read_strict_json(manifest_path)
        validate_manifest(manifest, where=str(manifest_path))
        entry = cls(path, manifest)
        for name in entry.files:
            file = entry.file_path(name)
            if not file.is_file():
                raise RegistryError(
                    f"{path}: model file {name!r} is missing (listed in {MANIFEST}); "
                    "rebuild the model or restore the file"
                )
        return entry

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def files(self) -> dict[str, str]:
        """File name (relative to the entry) -> sha256."""
        return dict(self.manifest["files"])

    @property
    def digest(self) -> str:
        """The sha256 naming this entry's content (see `files_digest`)."""
        return files_digest(self.files)

    @property
    def graph(self) -> dict[str, Any]:
        return dict(self.manifest["graph"])

    @property
    def graph_path(self) -> Path:
        return self.file_path(self.manifest["graph"]["file"])

    @property
    def tokenizer_path(self) -> Path:
        return self.file_path(self.manifest["tokenizer"]["file"])

    @property
    def fim(self) -> FimFormat | None:
        """The model's fill-in-the-middle format (acepilot/server/fim.py), or None."""
        return FimFormat.from_manifest(self.manifest.get("tokenizer", {}).get("fim"))

    @property
    def repo_format(self) -> RepoFormat | None:
        """The model's repository-level prompt format (acepilot/server/fim.py), or None."""
        return RepoFormat.from_manifest(self.manifest.get("tokenizer", {}).get("repo"))

    def file_path(self, name: str) -> Path:
        """The path of a listed file, refusing names that would leave the entry."""
        check_file_name(name, where=str(self.path / MANIFEST))
        file = self.path / name
        try:
            file.resolve().relative_to(self.path.resolve())
        except ValueError:
            raise RegistryError(
                f"{self.path}: file {name!r} points outside the entry directory"
            ) from None
        return file

    def verify(self) -> None:
        """Check the sha256 of every listed file; the error names the first bad file."""
        for name, expected in self.files.items():
            file = self.file_path(name)
            try:
                actual = sha256_file(file)
            except FileNotFoundError:
                raise RegistryError(f"{self.path}: model file {name!r} is missing") from None
            except OSError as exc:
                raise RegistryError(
                    f"{self.path}: cannot read model file {name!r} ({exc})"
                ) from None
            if actual != expected:
                raise RegistryError(
                    f"{self.path}: model file {name!r} is corrupt: its sha256 is {actual}, "
                    f"the manifest says {expected}; rebuild the model or restore the file"
                )
            if file.stat().st_nlink > 1:  # made by an older acepilot, or by hand
                log.warning(
                    "%s: model file %r shares its inode with another path: writing there "
                    "changes this version too (re-register it to get a private copy)",
                    self.path,
                    name,
                )


def read_strict_json(path: Path) -> Any:
    """A JSON file that must be strict JSON: no NaN or Infinity, bounded nesting."""
    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=reject_constant)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise RegistryError(f"{path}: not valid JSON ({str(exc)[:200]})") from None
    except ValueError as exc:  # reject_constant
        raise RegistryError(f"{path}: {exc}") from None


def check_file_name(name: object, *, where: str) -> str:
    """A relative POSIX path inside the entry: no '..', no absolute path, no backslash."""
    if not isinstance(name, str) or not name:
        raise RegistryError(f"{where}: file names must be non-empty strings, got {name!r}")
    pure = PurePosixPath(name)
    if (
        pure.is_absolute()
        or "\\" in name
        or "\0" in name
        or any(part in ("..", ".", "") for part in name.split("/"))
    ):
        raise RegistryError(f"{where}: unsafe file name {name!r} (path traversal is not allowed)")
    return name


def validate_manifest(manifest: object, *, where: str) -> None:
    """Check the fields the serving side relies on; the message names the bad field."""

    def fail(message: str) -> RegistryError:
        return RegistryError(f"{where}: malformed manifest: {message}")

    def field(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: str) -> Any:
        if key not in obj:
            raise fail(f"missing field '{path}{key}'")
        value = obj[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python; JSON true is never a valid count.
        if isinstance(value, bool) and bool not in kinds:
            raise fail(f"'{path}{key}' must be {kind_names(kinds)}, got {value!r}")
        if not isinstance(value, kinds):
            raise fail(f"'{path}{key}' must be {kind_names(kinds)}, got {type(value).__name__}")
        return value

    def positive(obj: Mapping[str, Any], key: str, path: str) -> int:
        value: int = field(obj, key, int, path)
        if value <= 0:
            raise fail(f"'{path}{key}' must be a positive integer, got {value}")
        return value

    if not isinstance(manifest, dict):
        raise fail("expected a JSON object")
    fmt = field(manifest, "format", int, "")
    if fmt != FORMAT:
        raise fail(f"format {fmt} is not supported by acepilot {__version__} (expected {FORMAT})")
    if not NAME.match(field(manifest, "name", str, "")):
        raise fail(f"invalid name {manifest['name']!r}")
    if not VERSION.match(field(manifest, "version", str, "")):
        raise fail(f"invalid version {manifest['version']!r}")
    field(manifest, "created", str, "")
    field(manifest, "acepilot_version", str, "")
    files = field(manifest, "files", dict, "")
    if not files:
        raise fail("'files' is empty")
    for name, digest in files.items():
        check_file_name(name, where=where)
        if name == MANIFEST:
            raise fail(f"{MANIFEST} cannot list itself")
        if not isinstance(digest, str) or not SHA256.match(digest):
            raise fail(f"files[{name!r}] must be a lowercase hex sha256, got {digest!r}")
    if "device" in manifest and manifest["device"] not in DEVICES:
        raise fail(f"'device' must be one of {', '.join(DEVICES)}, got {manifest['device']!r}")
    if "precision" in manifest:
        field(manifest, "precision", str, "")

    graph = field(manifest, "graph", dict, "")
    graph_file = field(graph, "file", str, "graph.")
    if graph_file not in files:
        raise fail(f"graph.file {graph_file!r} is not listed in 'files' (it would go unchecked)")
    for key in ("num_layers", "num_kv_heads", "head_dim", "max_length"):
        positive(graph, key, "graph.")
    if field(graph, "kv_dtype", str, "graph.") not in KV_DTYPES:
        raise fail(f"graph.kv_dtype must be one of {', '.join(KV_DTYPES)}")
    if graph.get("logits", "last") != "last":
        raise fail("graph.logits must be 'last' (logits of the last new token only)")

    tokenizer = field(manifest, "tokenizer", dict, "")
    tokenizer_file = field(tokenizer, "file", str, "tokenizer.")
    if tokenizer_file not in files:
        raise fail(f"tokenizer.file {tokenizer_file!r} is not listed in 'files'")
    for key in ("bos_token_id", "eos_token_id"):
        value = tokenizer.get(key)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            raise fail(f"tokenizer.{key} must be a non-negative integer or null, got {value!r}")


def kind_names(kinds: tuple[type, ...]) -> str:
    names = {dict: "an object", str: "a string", int: "an integer", list: "a list"}
    return " or ".join(names.get(kind, kind.__name__) for kind in kinds)


class Registry:
    """A directory of model entries (see the module docstring)."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_root()

    # ---- reading ---------------------------------------------------------

    def names(self) -> list[str]:
        """Registered model names (directories with at least one version)."""
        if not self.root.is_dir():
            return []
        return sorted(
            child.name
            for child in self.root.iterdir()
            if child.is_dir() and NAME.match(child.name) and self.versions(child.name)
        )

    def versions(self, name: str) -> list[str]:
        """Committed versions of `name`, oldest first ([] for an unknown name)."""
        directory = self.root / check_name(name)
        if not directory.is_dir():
            return []
        found = [
            child.name
            for child in directory.iterdir()
            if VERSION.match(child.name) and child.is_dir()
        ]
        return sorted(found, key=version_number)

    def production(self, name: str) -> str | None:
        """The production version of `name`, or None when no pointer was set."""
        pointer = self.root / check_name(name) / PRODUCTION
        try:
            # O_NONBLOCK: a FIFO put in its place must not block every reader forever.
            descriptor = os.open(pointer, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RegistryError(f"{pointer}: cannot read the production pointer ({exc})") from None
        try:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                raise RegistryError(
                    f"{pointer}: the production pointer is not a regular file (delete it, "
                    f"then set it with `acepilot rollback {name} --to VERSION`)"
                )
            data = os.read(descriptor, MAX_POINTER_BYTES + 1)
        except OSError as exc:
            raise RegistryError(f"{pointer}: cannot read the production pointer ({exc})") from None
        finally:
            os.close(descriptor)
        try:
            text = data[:MAX_POINTER_BYTES].decode("utf-8").strip()
        except UnicodeDecodeError:
            text = repr(data[:40])
        if len(data) > MAX_POINTER_BYTES:
            text = text + "..."
        if not VERSION.match(text):
            raise RegistryError(
                f"{pointer}: corrupt production pointer {text[:40]!r} "
                "(it should hold one version such as v1; rewrite or delete it)"
            )
        return text

    def entry(self, name: str, version: str) -> ModelEntry:
        """A specific version; the manifest must agree with where the entry lies."""
        version_number(version)
        path = self.root / check_name(name) / version
        if path.is_symlink():
            raise RegistryError(
                f"{path}: a symbolic link; a registry version must be a directory of its own "
                "(remove the link, or register the model it points to)"
            )
        if not path.is_dir():
            known = self.versions(name)
            if not known:
                raise self.unknown(name)
            raise RegistryError(
                f"model {name!r} has no version {version!r} (versions: {', '.join(known)})"
            )
        entry = ModelEntry.load(path)
        if entry.name != name or entry.version != version:
            raise RegistryError(
                f"{path}: manifest says {entry.name} {entry.version}, "
                "which does not match where the entry lies"
            )
        return entry

    def resolve(self, model: str | Path, version: str | None = None) -> ModelEntry:
        """A registry name or the path of an entry directory -> a loaded entry.

        For a name without `version`: the production version; when no
        production pointer exists (set by hand or never set), the latest
        version, with a warning. A production pointer that names a missing
        version is an error, never silently skipped. A bare word is looked up
        in the registry first; anything with a path separator is a directory.
        """
        text = str(model)
        is_name = isinstance(model, str) and NAME.match(text) is not None
        if is_name and (self.root / text).is_dir():
            return self._resolve_name(text, version)
        path = Path(text).expanduser()
        if path.is_dir():
            if version is not None:
                raise RegistryError(
                    f"{path}: a version can only be given with a registry name, not a directory"
                )
            return ModelEntry.load(path)
        if is_name:
            raise self.unknown(text)
        raise RegistryError(f"{text}: no such registry model or entry directory")

    def _resolve_name(self, name: str, version: str | None) -> ModelEntry:
        if version is not None:
            return self.entry(name, version)
        production = self.production(name)
        if production is not None:
            if not (self.root / name / production).is_dir():
                raise RegistryError(
                    f"model {name!r}: production points to {production}, which does not exist "
                    f"(versions: {', '.join(self.versions(name)) or 'none'})"
                )
            return self.entry(name, production)
        versions = self.versions(name)
        if not versions:
            raise self.unknown(name)
        log.warning("model %s has no production pointer: using its latest, %s", name, versions[-1])
        return self.entry(name, versions[-1])

    def unknown(self, name: str) -> RegistryError:
        known = self.names()
        listing = f"known: {', '.join(known)}" if known else "the registry is empty"
        return RegistryError(
            f"unknown model {name!r} in {self.root} ({listing}); "
            "build one with: acepilot model build SOURCE --precision int4 --name NAME"
        )

    # ---- writing ---------------------------------------------------------

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[Path]:
        """A fresh, empty staging directory for a build of `name`.

        Commit it with `commit` inside the `with` block. Whatever is left
        when the block ends (an exception, or no commit) is removed.
        """
        check_name(name)
        staging_root = self.root / STAGING
        staging_root.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=staging_root))
        try:
            yield path
        finally:
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)

    def commit(self, staging_dir: Path, name: str, manifest: Mapping[str, Any]) -> ModelEntry:
        """Hash the staged files, write manifest.json and rename into the next version.

        The fields "files", "name", "version", "created", "acepilot_version"
        and "format" are written here; everything else comes from `manifest`.
        Concurrent commits of the same name get distinct versions (the rename
        fails if the version appeared meanwhile, and the next one is tried).
        """
        check_name(name)
        staging_dir = Path(staging_dir)
        staging_root = (self.root / STAGING).resolve()
        if staging_dir.resolve().parent != staging_root or not staging_dir.is_dir():
            raise RegistryError(
                f"{staging_dir}: not a staging directory of {self.root} (use Registry.stage)"
            )
        strict_json(manifest, where=name)  # before any hashing: fail fast
        files = self._hash_staged(staging_dir)
        if not files:
            raise RegistryError(f"{staging_dir}: nothing to commit (no files)")
        final: dict[str, Any] = dict(manifest)
        final.update(
            format=FORMAT,
            name=name,
            files=files,
            created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            acepilot_version=__version__,
        )
        target_dir = self.root / name
        target_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(staging_dir, 0o755)  # mkdtemp makes it 0700; servers may run as another user
        for _ in range(COMMIT_ATTEMPTS):
            existing = self.versions(name)
            version = f"v{version_number(existing[-1]) + 1 if existing else 1}"
            final["version"] = version
            validate_manifest(final, where=f"manifest for {name} {version}")
            write_synced(staging_dir / MANIFEST, strict_json(final, where=f"{name} {version}"))
            fsync_directory(staging_dir)
            target = target_dir / version
            if target.exists():
                continue
            try:
                os.rename(staging_dir, target)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    continue  # another build took this version first: try the next one
                raise RegistryError(f"cannot register {name} {version}: {exc}") from None
            fsync_directory(target_dir)
            log.info("registered %s %s at %s", name, version, target)
            return ModelEntry.load(target)
        raise RegistryError(
            f"cannot register {name}: no free version after {COMMIT_ATTEMPTS} tries"
        )

    @staticmethod
    def _hash_staged(staging_dir: Path) -> dict[str, str]:
        files: dict[str, str] = {}
        for file in sorted(staging_dir.rglob("*")):
            relative = file.relative_to(staging_dir).as_posix()
            if relative == MANIFEST:
                continue
            if file.is_symlink():
                raise RegistryError(f"{file}: symbolic links cannot be registered")
            if file.is_dir():
                continue
            check_file_name(relative, where=str(staging_dir))
            if file.stat().st_nlink > 1:
                break_hard_link(file)
            with file.open("rb") as handle:
                digest = hashlib.sha256()
                while chunk := handle.read(HASH_CHUNK):
                    digest.update(chunk)
                os.fsync(handle.fileno())  # durable before the rename makes it visible
            files[relative] = digest.hexdigest()
        return files

    def set_production(self, name: str, version: str) -> None:
        """Point production at `version` atomically (rollback = set it back)."""
        self.entry(name, version)  # it must exist and be a valid entry
        directory = self.root / name
        descriptor, temp = tempfile.mkstemp(prefix=f".{PRODUCTION}.", dir=directory)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(version + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temp, 0o644)
            os.replace(temp, directory / PRODUCTION)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        fsync_directory(directory)
        log.info("production of %s is now %s", name, version)


def strict_json(manifest: Mapping[str, Any], *, where: str) -> str:
    """The manifest as strict JSON; a NaN or infinite number is refused, by name."""
    bad = nonfinite_fields(manifest)
    if bad:
        fields = ", ".join(f"{path} is not a finite number ({value})" for path, value in bad)
        raise RegistryError(
            f"manifest for {where}: {fields}; manifests are strict JSON, and a NaN or "
            "infinite measurement means the build or its checks are broken"
        )
    return json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n"


def break_hard_link(file: Path) -> None:
    """Give a staged file its own inode: a registered version never shares bytes on disk
    with files outside the registry (a scratch build, a candidate), which could be
    written in place."""
    private = file.with_name(f".{file.name}.private")
    private.unlink(missing_ok=True)
    copy_private(file, private)
    shutil.copystat(file, private)
    os.replace(private, file)


def write_synced(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def fsync_directory(path: Path) -> None:
    """Make a rename durable (a no-op where directories cannot be opened)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
