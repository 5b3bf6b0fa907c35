"""Reading and writing files named by an untrusted user or model: regular files only, no
pickles, no following symlinks when writing, one file per name."""
from __future__ import annotations

import errno
import os
import re
import stat
import tokenize
from pathlib import Path

import numpy as np

from edgeseq.errors import EdgeseqError, GraphError, InputError


def open_regular(path: str | os.PathLike, error: type[EdgeseqError] = InputError):
    """`path` opened for binary reading; `error` unless it is a regular file.

    NOTE: O_NONBLOCK so that opening a FIFO returns at once instead of waiting for a writer
    (it would hang `inspect`/`run` forever); fstat on the open descriptor, so the check and
    the read see the same file."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
        if not stat.S_ISREG(mode):
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) \
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file"
            raise error(f"{path}: not a regular file ({kind}); refusing to read it")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def load_npy(path: str | os.PathLike, what: str) -> np.ndarray:
    """One array from a .npy file given on the command line (`what`, e.g. "--input x").

    No pickles (allow_pickle=False), no .npz, regular files only; anything else is an
    InputError naming `what` and the file. A missing file stays FileNotFoundError."""
    with open_regular(path) as f:
        try:
            _check_npy_size(f, path, what)
            a = np.load(f, allow_pickle=False)
        except (ValueError, EOFError, OSError, SyntaxError, TypeError, OverflowError,
                tokenize.TokenError) as e:
            # NOTE: a corrupt, pickled or truncated file must not surface as a traceback
            # (numpy parses the header with tokenize and ast.literal_eval)
            raise InputError(f"{what}: {path} is not a readable .npy array "
                             f"({type(e).__name__}: {e})") from None
    if not isinstance(a, np.ndarray):
        raise InputError(f"{what}: {path} holds an .npz archive, expected one .npy array")
    return a


def _check_npy_size(f, path, what: str) -> None:
    """Refuse a .npy header that states more bytes than the file holds: numpy would
    allocate the stated size first (a 100-byte file can ask for terabytes)."""
    fmt = np.lib.format
    if f.read(6) != fmt.MAGIC_PREFIX:
        f.seek(0)
        return                       # not .npy (an .npz, or junk): np.load decides
    f.seek(0)
    version = fmt.read_magic(f)
    read = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
    if read is None:
        f.seek(0)
        return                       # format 3.0 (utf-8 header): rare; np.load decides
    shape, _, dtype = read(f)
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize if shape else dtype.itemsize
    have = os.fstat(f.fileno()).st_size - f.tell()
    if not dtype.hasobject and need > have:
        raise InputError(f"{what}: {path}: header states shape {tuple(shape)} {dtype} "
                         f"({need} bytes), the file holds {have} bytes")
    f.seek(0)


# ---- writing outputs --------------------------------------------------------------------------
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def output_filenames(names: list[str], suffix: str = ".npy") -> dict[str, str]:
    """name -> a distinct, safe file name (no path separators, no leading dot).

    Characters other than letters, digits, '.', '_' and '-' become '_'; a name that then
    collides with an earlier one (case-insensitively, for macOS and Windows file systems)
    gets '_2', '_3', ... A NUL byte in a name is refused."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        if "\0" in name:
            raise GraphError(f"output name {name!r} contains a NUL byte; refusing to name a "
                             f"file after it")
        base = _UNSAFE.sub("_", name)
        base = "_" + base[1:] if base.startswith(".") else base
        base = base or "_"
        cand, k = base, 1
        while (cand + suffix).casefold() in used:
            k += 1
            cand = f"{base}_{k}"
        used.add((cand + suffix).casefold())
        out[name] = cand + suffix
    return out


def save_npy_nofollow(dir_fd: int, filename: str, arr: np.ndarray) -> None:
    """Write `arr` as `filename` inside the open directory `dir_fd`, replacing a file of that
    name but never writing through a symlink: the array goes to a fresh O_EXCL|O_NOFOLLOW
    temporary that is renamed over the entry (a symlink there is replaced, not followed)."""
    tmp = f".{filename}.{os.getpid()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) \
        | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, 0o644, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, arr, allow_pickle=False)
        os.replace(tmp, filename, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        raise


def open_dir(path: str | os.PathLike) -> int:
    """A directory descriptor for `path`, created if missing."""
    Path(path).mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
