"""Shared by the zoo tests: a tiny Scenic checkpoint written as Flax writes it, a loopback HTTP server, and
the `server` / `zoo` fixtures (an empty cache and an extra registry).

The checkpoint spells the Scenic parameter names out (not produced by the library): a Model 1 with width
32, 2 heads, one block, 8 frames of 16 px and tubelet 2x8x8 (16 tokens), 2 classes. Flax's msgpack
encoding: ndarrays as ext type 1 = packb((shape, dtype name, raw bytes))."""

from __future__ import annotations

import http.server
import json
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest

from vivit.zoo import download

D, HEADS, HEAD_DIM, MLP, CLASSES = 32, 2, 16, 64, 2  # tiny Model 1: 8 frames of 16 px, tubelet 2x8x8 -> 16 tokens


def scenic_params(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    r = lambda *shape: rng.normal(0, 0.2, shape).astype(np.float32)  # noqa: E731
    ln = lambda: {"scale": 1 + r(D), "bias": r(D)}  # noqa: E731
    dense = lambda i, o: {"kernel": r(i, o), "bias": r(o)}  # noqa: E731
    mha = {n: {"kernel": r(D, HEADS, HEAD_DIM), "bias": r(HEADS, HEAD_DIM)} for n in ("query", "key", "value")}
    mha["out"] = {"kernel": r(HEADS, HEAD_DIM, D), "bias": r(D)}
    block = {"LayerNorm_0": ln(), "MultiHeadDotProductAttention_0": mha, "LayerNorm_1": ln(),
             "MlpBlock_0": {"Dense_0": dense(D, MLP), "Dense_1": dense(MLP, D)}}
    return {"embedding": {"kernel": r(2, 8, 8, 3, D), "bias": r(D)}, "cls": r(1, 1, D),
            "Transformer": {"posembed_input": {"pos_embedding": r(1, 1 + 16, D)}, "encoderblock_0": block,
                            "encoder_norm": ln()},
            "output_projection": dense(D, CLASSES)}


def flax_msgpack(tree: dict) -> bytes:
    """Flax's serialization.msgpack_serialize: ndarrays as ext type 1."""
    def ext(x):
        if isinstance(x, np.ndarray):
            return msgpack.ExtType(1, msgpack.packb((x.shape, x.dtype.name, x.tobytes("C")), use_bin_type=True))
        raise TypeError(type(x))

    return msgpack.packb(tree, default=ext, use_bin_type=True, strict_types=True)


def train_state(params: dict) -> bytes:
    """A legacy Scenic train state: parameters under optimizer/target, beside momentum buffers and a step."""
    momentum = json.loads(json.dumps(params, default=lambda a: 0))  # same structure, scalars instead of arrays
    return flax_msgpack({"optimizer": {"target": params, "state": {"step": 7, "param_states": momentum}},
                         "global_step": 7, "rng": np.zeros(2, np.uint32)})


class Server:
    """127.0.0.1 HTTP server: `files` by path, Range requests, scripted failures, a log of requests."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.status: dict[str, int] = {}        # path -> HTTP error status to answer
        self.drop_after: dict[str, int] = {}    # path -> bytes sent before the connection is cut (once)
        self.stall: dict[str, float] = {}       # path -> seconds to wait before answering (once)
        self.log: list[tuple[str, str | None]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 10

            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.log.append((self.path, self.headers.get("Range")))
                time.sleep(outer.stall.pop(self.path, 0.0))
                if self.path in outer.status:
                    self.send_error(outer.status[self.path])
                    return
                if self.path not in outer.files:
                    self.send_error(404)
                    return
                data, start = outer.files[self.path], 0
                if (spec := self.headers.get("Range")) is not None:
                    start = int(spec.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if (cut := outer.drop_after.pop(self.path, None)) is not None:
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture
def zoo(tmp_path, monkeypatch):
    """An empty cache and an extra registry file; returns a function that writes [[model]] tables."""
    for name in ("VIVIT_OFFLINE", "VIVIT_ZOO_URL", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VIVIT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(download, "BACKOFF_S", 0.0)
    extra = tmp_path / "extra.toml"
    extra.write_text("")
    monkeypatch.setenv("VIVIT_ZOO", str(extra))

    def register(**tables: dict) -> Path:
        lines = []
        for name, t in tables.items():
            t = {"format": "scenic", "variant": "st", "frames": 8, "labels": ["bright", "dark"], "stride": 1,
                 "short_side": 16, "crop": 16, "views": "1x1", **t}
            lines.append(f"[[model]]\nname = {json.dumps(name)}\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in t.items()))
        extra.write_text("\n".join(lines))
        return extra

    return register


def cache_files(tmp_path: Path) -> list[str]:
    """Everything in the model cache."""
    root = tmp_path / "home" / "models"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []
