"""Reading only the parameters of a Flax msgpack train state, streamed from disk.

An official checkpoint holds `optimizer/target` (the parameters) next to the optimiser state (momentum
buffers as large as the parameters) and bookkeeping. `vivit.weights.scenic.restore_checkpoint` reads
the whole file into memory and decodes all of it; here the file is read in blocks, the optimiser state
is skipped without being decoded, and only `optimizer/target` (legacy) or `params` is kept: one copy
of the parameters in memory, never the file and the tree together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vivit.errors import VivitError
from vivit.weights.scenic import UNPACK_OPTIONS, _unchunk, require_msgpack

READ_SIZE = 1 << 22


def _read_map(unpacker: Any, keep: dict[str, Any]) -> dict[str, Any]:
    """Read a map whose keys in `keep` are decoded (a nested dict: descend; None: decode whole); others skipped."""
    found: dict[str, Any] = {}
    for _ in range(unpacker.read_map_header()):
        key = unpacker.unpack()
        if key not in keep:
            unpacker.skip()
        elif keep[key] is None:
            found[key] = unpacker.unpack()
        else:
            found[key] = _read_map(unpacker, keep[key])
    return found


def read_params(path: str | Path) -> dict[str, Any]:
    """The parameter tree of a Flax msgpack checkpoint (`optimizer/target` or `params`) as numpy arrays."""
    msgpack = require_msgpack()
    path = Path(path)
    with path.open("rb") as f:
        unpacker = msgpack.Unpacker(f, read_size=READ_SIZE, max_buffer_size=0, **UNPACK_OPTIONS)
        try:
            state = _read_map(unpacker, {"optimizer": {"target": None}, "params": None})
        except (ValueError, TypeError, msgpack.UnpackException) as e:  # OutOfData (truncated) is an UnpackException
            raise VivitError(f"{path} is not a Flax msgpack checkpoint ({type(e).__name__}: {e})") from None
    params = state.get("optimizer", {}).get("target", state.get("params"))
    if not isinstance(params, dict):
        raise VivitError(f"{path} is a msgpack file without parameters (no optimizer/target and no params)")
    return _unchunk(params)
