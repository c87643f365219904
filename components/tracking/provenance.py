"""Where a run's code and data came from: the git commit of the code and DVC content hashes of the data.

Kept free of MLflow (and cheap to import) so that anything can fingerprint a file or a directory."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from pathlib import Path

logger = logging.getLogger(__name__)

GIT_TIMEOUT_S = 30.0


def _git(root: Path, *args: str) -> str | None:
    """stdout of `git -C root ...`, or None on any failure: provenance must never crash a stage."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:  # git missing, not executable, hung
        logger.debug("git %s in %s failed: %s", " ".join(args), root, exc)
        return None
    if proc.returncode != 0:
        logger.debug("git %s in %s: %s", " ".join(args), root, proc.stderr.strip())
        return None
    return proc.stdout


def git_commit(root: Path) -> tuple[str | None, bool | None]:
    """(HEAD sha, whether the work tree differs from it) for the git repository holding `root`.

    Untracked files that git does not ignore count as dirty: a new module changes what runs.
    (None, None) when `root` is not in a git repository, it has no commit yet, or git is missing."""
    out = _git(Path(root), "rev-parse", "--verify", "HEAD")
    if out is None or not out.strip():
        return None, None
    sha = out.strip()
    status = _git(Path(root), "status", "--porcelain")
    dirty = None if status is None else bool(status.strip())
    return sha, dirty


def _dvc_repo_root(path: Path) -> Path | None:
    """The innermost directory above `path` holding a `.dvc/` directory, as DVC itself finds its repo."""
    for parent in path.parents:
        if (parent / ".dvc").is_dir():
            return parent
    return None


def dvc_hash(path: Path) -> str:
    """The md5 DVC 3 records for `path` in dvc.lock or a .dvc file (directories: `<md5>.dir`).

    Computed with dvc-data's own `build` (the code `dvc add` / `dvc repro` run), so the value is DVC's
    by construction. Inside a DVC repository the repository's `.dvcignore` rules (and DVC's defaults:
    `.git`, `.hg`, `.dvc`) apply, as they do for `dvc add`; outside any DVC repository nothing is
    ignored. Reads every byte (no DVC state cache), so it costs one pass over the data.
    Raises FileNotFoundError when `path` does not exist."""
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_data.hashfile.tree import Tree
    from dvc_objects.fs.local import LocalFileSystem
    from dvc_objects.fs.memory import MemoryFileSystem

    # DVC works on absolute, unresolved paths (a symlinked output is hashed through the link).
    abspath = os.path.abspath(os.fspath(path))
    if not os.path.exists(abspath):
        raise FileNotFoundError(f"dvc_hash: no such file or directory: {abspath}")

    fs = LocalFileSystem()
    ignore = None
    repo_root = _dvc_repo_root(Path(abspath))
    if repo_root is not None and os.path.isdir(abspath):
        from dvc.ignore import DvcIgnoreFilter

        ignore = DvcIgnoreFilter(fs, str(repo_root))

    # `build` wants an object database only to stage objects; with dry_run nothing is written to it.
    odb = HashFileDB(MemoryFileSystem(), "memory://llmops-dvc-hash", hash_name="md5")
    _, _, obj = build(odb, abspath, fs, "md5", dry_run=True, ignore=ignore)
    value = obj.hash_info.value
    if isinstance(obj, Tree) and obj.fs is not None and obj.path:
        # Tree.digest leaves its JSON listing in the process-global memory filesystem: drop it so a
        # long-lived flow that hashes big directories does not accumulate them.
        with contextlib.suppress(Exception):
            obj.fs.rm_file(obj.path)
    if not value:
        raise RuntimeError(f"dvc-data returned no hash for {abspath}")
    return str(value)
