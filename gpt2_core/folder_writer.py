"""All-or-nothing folder writes: after a crash at any moment a folder holds its old files or its
new ones, never a mix.

A write goes to a sibling folder `.NAME.new-<id>` beside `NAME`: every file is written and
fsynced, then `gpt2_manifest.json` (each file's size, sha256 on request) last, so a sibling
with a complete manifest is a complete checkpoint. Linux cannot rename a folder onto a
non-empty one, so the swap takes two renames:

    NAME -> .NAME.old-<id>        # NAME is missing from here ...
    .NAME.new-<id> -> NAME        # ... to here; the new sibling is already complete
    remove .NAME.old-<id>

A reader that just lists the folder (transformers) sees the old folder, the new one, or none.
`recover` finds the new folder in the window between the renames, and the next write finishes
an interrupted swap before it starts. Files of the old folder that the new write does not
supersede (a tokenizer saved beside the weights, a training run's `checkpoint/`) are carried
into the new folder by hard link, inside the same transaction.

One writer per folder at a time; concurrent writers to the same folder are not supported.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

logger = logging.getLogger(__name__)

MANIFEST = "gpt2_manifest.json"
FORMAT = 1
# A file's content: text (written as UTF-8), bytes, or a function that writes into a binary
# file object (for contents too large to hold twice, such as safetensors shards).
Content = str | bytes | Callable[[BinaryIO], None]

_SIBLING = re.compile(r"^\.(?P<name>.+)\.(?P<kind>new|old)-(?P<pid>\d+)-[0-9a-f]+$")
_CHUNK = 1 << 24


class _Sink:
    """A write-only binary file over a descriptor that counts (and optionally hashes) bytes.

    Writes go through `os.write`, so a test can stop a save at any write."""

    def __init__(self, fd: int, digest: Any | None):
        self.fd, self.digest, self.size = fd, digest, 0

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        if self.digest is not None:
            self.digest.update(view)
        done = 0
        while done < len(view):
            done += os.write(self.fd, view[done:done + _CHUNK])
        self.size += done
        return done

    def flush(self) -> None:
        pass


def _write_file(path: str, content: Content, sha256: bool) -> dict[str, Any]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        sink = _Sink(fd, hashlib.sha256() if sha256 else None)
        if callable(content):
            content(sink)  # type: ignore[arg-type]
        else:
            sink.write(content.encode("utf-8") if isinstance(content, str) else content)
        os.fsync(fd)
    finally:
        os.close(fd)
    record: dict[str, Any] = {"size": sink.size}
    if sink.digest is not None:
        record["sha256"] = sink.digest.hexdigest()
    return record


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_file_name(name: str) -> None:
    """File names inside a checkpoint folder are plain names: no folders, no `..`."""
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name
            or "\\" in name or "\0" in name):
        raise ValueError(f"A checkpoint file name must be a plain file name inside the folder. "
                         f"Received: {name!r}.")


# ---- reading the manifest --------------------------------------------------------------------

def read_manifest(directory: str) -> dict[str, dict[str, Any]] | None:
    """The manifest's files (name -> {"size", "sha256"?}); None when the folder has none.

    Raises:
        ValueError: the manifest is not one this writer wrote.
    """
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        files = data["files"]
        if not isinstance(files, dict) or not all(
                isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("size"), int)
                for k, v in files.items()):
            raise TypeError("`files` must map names to {'size': int}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"`{path}` is not a valid manifest ({e}).") from e
    return files


def manifest_problems(directory: str, check_sha256: bool = False) -> list[str]:
    """Every file whose presence or size differs from the folder's manifest (none without one)."""
    try:
        files = read_manifest(directory)
    except ValueError as e:
        return [str(e)]
    if files is None:
        return []
    problems = []
    for name, record in sorted(files.items()):
        path = os.path.join(directory, name)
        try:
            check_file_name(name)
            size = os.stat(path).st_size
        except ValueError:
            problems.append(f"`{MANIFEST}` names {name!r}, which is not a file name in the folder")
            continue
        except FileNotFoundError:
            problems.append(f"`{name}` is listed in `{MANIFEST}` but missing")
            continue
        if size != record["size"]:
            problems.append(f"`{name}` has {size} bytes; `{MANIFEST}`, written with it, says "
                            f"{record['size']} (a truncated or corrupt copy, or a file replaced "
                            "by another program?)")
        elif check_sha256 and "sha256" in record and _sha256(path) != record["sha256"]:
            problems.append(f"`{name}` does not match its sha256 in `{MANIFEST}`")
    return problems


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _complete(directory: str) -> bool:
    try:
        return read_manifest(directory) is not None and not manifest_problems(directory)
    except OSError:
        return False


# ---- recovery --------------------------------------------------------------------------------

def _siblings(path: str) -> list[tuple[str, str, int]]:
    """(sibling path, "new"/"old", writer pid) of the writer's folders beside `path`."""
    parent, name = os.path.split(os.path.abspath(path))
    try:
        entries = os.listdir(parent)
    except OSError:
        return []
    out = []
    for entry in sorted(entries):
        m = _SIBLING.match(entry)
        if m and m["name"] == name:
            out.append((os.path.join(parent, entry), m["kind"], int(m["pid"])))
    return out


def recover(path: str | os.PathLike[str]) -> str | None:
    """Where a folder interrupted between the two renames of a swap now lives (read only).

    None when `path` is a folder, or when no writer's sibling holds a complete copy.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return None
    found = _siblings(path)
    for kind in ("new", "old"):  # a new sibling is complete before the old folder moves
        for sibling, k, _ in found:
            if k == kind and os.path.isdir(sibling) and (kind == "old" or _complete(sibling)):
                logger.warning("%s was interrupted while being replaced; reading %s.", path,
                               sibling)
                return sibling
    return None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _finish_interrupted(path: str) -> None:
    """Complete a swap a crash interrupted, then remove the dead writers' leftovers."""
    found = [s for s in _siblings(path) if not _alive(s[2])]
    if not os.path.isdir(path):
        source = recover(path)
        if source is not None:
            os.rename(source, path)
            _fsync_dir(os.path.dirname(os.path.abspath(path)))
    for sibling, _, _ in found:
        if os.path.lexists(sibling):
            shutil.rmtree(sibling, ignore_errors=True)


# ---- writing ---------------------------------------------------------------------------------

def _carry_over(old: str, new: str, skip: Callable[[str], bool]) -> None:
    """Hard-link the old folder's other entries into the new one (a copy where links fail)."""
    for entry in sorted(os.listdir(old)):
        if skip(entry) or entry == MANIFEST or _SIBLING.match(entry):
            continue
        _link_tree(os.path.join(old, entry), os.path.join(new, entry))


def _link_tree(src: str, dst: str) -> None:
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
    elif os.path.isdir(src):
        os.mkdir(dst)
        for entry in sorted(os.listdir(src)):
            _link_tree(os.path.join(src, entry), os.path.join(dst, entry))
    else:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)


class FolderWriter:
    """Write a folder's files in one transaction.

    ```
    with FolderWriter(path) as w:
        w.write("config.json", text)
        w.write("model.safetensors", lambda f: ...)
    ```

    Nothing is visible at `path` until the `with` block ends without an exception; then all
    files appear at once. An exception discards them and leaves `path` as it was.

    Args:
        path: the folder (created if missing, replaced if present).
        sha256: record each file's sha256 in the manifest (`records` has them too).
        supersedes: names of the old folder's entries the new files replace even when not
            written again (stale shards); every other entry is carried over.
    """

    def __init__(self, path: str | os.PathLike[str], *, sha256: bool = False,
                 supersedes: Callable[[str], bool] | None = None):
        path = os.path.abspath(os.fspath(path))
        if os.path.islink(path) and os.path.isdir(path):
            path = os.path.realpath(path)  # replace the folder the link points to, not the link
        self.path = path
        self.sha256 = sha256
        self.records: dict[str, dict[str, Any]] = {}
        self._supersedes = supersedes or (lambda name: False)
        self._tmp: str | None = None

    def __enter__(self) -> FolderWriter:
        if os.path.lexists(self.path) and not os.path.isdir(self.path):
            raise FileExistsError(f"{self.path!r} exists and is not a folder. A checkpoint is a "
                                  "folder: pass a new path, or remove the file first.")
        parent, name = os.path.split(self.path)
        os.makedirs(parent, exist_ok=True)
        _finish_interrupted(self.path)
        self._token = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._tmp = os.path.join(parent, f".{name}.new-{self._token}")
        os.mkdir(self._tmp)
        return self

    def write(self, name: str, content: Content) -> dict[str, Any]:
        """Write one file into the transaction; returns its record (size, sha256)."""
        check_file_name(name)
        if self._tmp is None:
            raise RuntimeError("FolderWriter.write is only valid inside its `with` block.")
        if name in self.records or name == MANIFEST:
            raise ValueError(f"{name!r} is written twice in one checkpoint (or is the manifest).")
        self.records[name] = _write_file(os.path.join(self._tmp, name), content, self.sha256)
        return self.records[name]

    def __exit__(self, kind, value, tb) -> None:
        tmp, self._tmp = self._tmp, None
        if kind is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            return
        try:
            if os.path.isdir(self.path):
                _carry_over(self.path, tmp, lambda n: n in self.records or self._supersedes(n))
                os.chmod(tmp, os.stat(self.path).st_mode & 0o7777)
            manifest = {"format": FORMAT, "files": self.records}
            _write_file(os.path.join(tmp, MANIFEST), json.dumps(manifest, indent=1) + "\n",
                        sha256=False)
            _fsync_dir(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._swap(tmp)

    def _swap(self, tmp: str) -> None:
        parent, name = os.path.split(self.path)
        old = None
        if os.path.isdir(self.path):
            old = os.path.join(parent, f".{name}.old-{self._token}")
            try:
                os.rename(self.path, old)
            except OSError as e:
                shutil.rmtree(tmp, ignore_errors=True)
                if e.errno in (errno.EBUSY, errno.EXDEV, errno.EPERM, errno.EACCES):
                    raise OSError(e.errno, f"Cannot replace {self.path!r} in one step ({e.strerror}: "
                                  "it is a mount point, or its parent folder is read-only). "
                                  "Save into a new folder inside it instead.") from e
                raise
        os.rename(tmp, self.path)
        _fsync_dir(parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def write_folder(path: str | os.PathLike[str], files: Mapping[str, Content], *,
                 sha256: bool = False, supersedes: Callable[[str], bool] | None = None
                 ) -> dict[str, dict[str, Any]]:
    """Write `files` (name -> content) as the folder `path`, all or nothing. Returns the
    manifest records. See `FolderWriter`."""
    with FolderWriter(path, sha256=sha256, supersedes=supersedes) as w:
        for name, content in files.items():
            w.write(name, content)
    return w.records

