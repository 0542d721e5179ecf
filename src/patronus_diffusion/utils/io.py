"""Atomic file writes: a crash or a full disk never leaves a half-written file in place."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError


_UMASK = os.umask(0)
os.umask(_UMASK)


class DiskWriteError(UserError, OSError):
    """A write failed (disk full, no permission); the previous file or checkpoint is still in place."""


def _explain(path: Path, e: OSError) -> str:
    hint = ""
    if e.errno == errno.ENOSPC:
        hint = " The disk is full: free some space or write to another folder (--out)."
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = " No permission to write there: choose another folder (--out)."
    return f"could not write {path}: {e.strerror or e}.{hint} Nothing was replaced."


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; on success it is fsynced, renamed over ``path``, and the
    directory is fsynced (so ``latest.json``, ``config.json`` or weights written this way survive a power cut)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp (and safetensors, which re-creates the file) leave 0600; give the permissions open() would
        os.chmod(tmp, 0o666 & ~_UMASK)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)  # the rename itself survives a power cut only once its directory is synced
    except OSError as e:
        _silent_unlink(tmp)
        raise DiskWriteError(e.errno, _explain(path, e)) from None
    except BaseException:
        _silent_unlink(tmp)
        raise


def _silent_unlink(p) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o):
    import numpy as np
    import torch

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def fsync_dir(path: Path) -> None:
    """fsync a directory, so a rename inside it survives a power cut (a no-op where the OS cannot)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Move a fully written directory into place (removing an older one of the same name).

    A new name is one atomic rename. Replacing an existing folder takes two (``final`` -> ``final.old``, then
    ``tmp`` -> ``final``): a crash between them leaves no ``final``, but two complete copies, the previous one
    at ``final.old`` and the new one at ``tmp_dir``, from which a reader recovers (checkpoints:
    :func:`patronus_diffusion.runs.recover_checkpoint_dir`). An error (not a crash) in the second rename puts
    the previous folder back before it is raised."""
    tmp_dir, final_dir = Path(tmp_dir), Path(final_dir)
    if final_dir.exists():
        old = final_dir.with_name(final_dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final_dir, old)
        try:
            os.replace(tmp_dir, final_dir)
        except OSError:
            try:
                os.replace(old, final_dir)
            except OSError:
                pass
            raise
        fsync_dir(final_dir.parent)  # the new folder is in place before the previous copy goes
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp_dir, final_dir)
