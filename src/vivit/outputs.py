"""Output folders of the commands (eval, extract, explain, predict --timeline, synth): a folder is made when
missing, a file in its place is refused, and files a previous run wrote are replaced only with --overwrite."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from vivit.errors import VivitError


def output_folder(out: str | Path, option: str = "--out") -> Path:
    """Make `out` (and its parents) as a folder; `option` names it in the error when a file is in the way."""
    out = Path(out)
    blocking = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        where = "" if blocking == out else f" ({blocking} is a file)"
        raise VivitError(f"{option} {out} is a file{where}; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def check_outputs(paths: Iterable[Path], overwrite: bool, *, hint: str = "") -> list[Path]:
    """Those of `paths` that exist; refused unless `overwrite` (`hint`: another way out, e.g. `or give --out`)."""
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more of its outputs)" if len(existing) > 1 else ""
        raise VivitError(f"{existing[0]} already exists{more}; pass --overwrite to replace it{hint}")
    return existing


def remove_stale(existing: Iterable[Path], written: Iterable[Path]) -> None:
    """With --overwrite: remove this command's previous outputs that the new run did not write again (a
    `--format gif` rerun removes the old overlay.mp4), so none is mistaken for the new run's."""
    keep = {Path(p) for p in written}
    for path in existing:
        if path not in keep:
            path.unlink(missing_ok=True)
