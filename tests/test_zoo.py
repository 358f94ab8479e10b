"""Pretrained models by name: registry, download (loopback HTTP server), cache, conversion, CLI.

Offline: every URL is a server on 127.0.0.1 started by the test. Checkpoints are written here as Flax
writes them (msgpack, ext type 1 = packb((shape, dtype name, raw bytes))) with the Scenic parameter
names spelled out, not produced by the library."""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import http.server
import io
import json
import os
import threading
import tomllib
from pathlib import Path

import msgpack
import numpy as np
import pytest
import torch

import vivit
from vivit.cli import main
from vivit.errors import ConfigError, VivitError
from vivit.zoo import download, registry
from vivit.zoo.pretrained import model_dir

OFFICIAL = "https://storage.googleapis.com/scenic-bucket/vivit/"
D, HEADS, HEAD_DIM, MLP, CLASSES = 32, 2, 16, 64, 2  # tiny Model 1: 8 frames of 16 px, tubelet 2x8x8 -> 16 tokens


# Fixtures: a Scenic checkpoint, a loopback server, a registry --------------------------------------
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
        self.log: list[tuple[str, str | None]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 10

            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.log.append((self.path, self.headers.get("Range")))
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
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
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
    root = tmp_path / "home" / "models"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


# The shipped registry ---------------------------------------------------------------------------------
def test_shipped_registry_has_the_six_models_with_their_preprocessing(monkeypatch):
    monkeypatch.delenv("VIVIT_ZOO", raising=False)
    entries = registry.load_registry()
    expected = {  # name: (url under the official base, variant, stride, views, reported accuracy, classes)
        "vivit-b-16x2-kinetics400": ("kinetics_400/vivit_base_16x2_unfactorized/checkpoint", "st", 2, "4x3", 79.9, 400),
        "vivit-b-16x2-fe-kinetics400": ("kinetics_400/vivit_base_16x2_fe/checkpoint", "fe", 2, "4x3", 78.4, 400),
        "vivit-l-16x2-fe-kinetics400": ("kinetics_400/vivit_large_16x2_fe/checkpoint", "fe", 2, "4x3", 80.3, 400),
        "vivit-l-16x2-fe-kinetics600": ("kinetics_600/vivit_large_16x2_fe/checkpoint", "fe", 2, "4x3", 81.6, 600),
        "vivit-l-16x2-fe-epic-kitchens": ("epic_kitchens/vivit_large_16x2_fe/checkpoint", "fe", 1, "4x1", 43.6, 397),
    }
    assert set(entries) == {*expected, "google/vivit-b-16x2-kinetics400"}
    for name, (path, variant, stride, views, accuracy, classes) in expected.items():
        e = entries[name]
        assert (e.format, e.url, e.variant, e.frames) == ("scenic", OFFICIAL + path, variant, 32)
        assert (e.stride, e.short_side, e.crop, e.normalisation, e.views) == (stride, 256, 224, "minus_one_one", views)
        assert e.accuracy == accuracy and len(registry.shipped_labels(e.labels)) == classes
    hf = entries["google/vivit-b-16x2-kinetics400"]
    assert (hf.format, hf.url, hf.variant, hf.frames, hf.labels) == ("hf", "google/vivit-b-16x2-kinetics400", "st", 32, "kinetics400")
    ek = entries["vivit-l-16x2-fe-epic-kitchens"]
    assert ek.class_splits == (300, 97) and ek.split_names == ("noun", "verb")


def test_shipped_label_sets_are_in_output_order():
    k400, k600, ek = (registry.shipped_labels(n) for n in ("kinetics400", "kinetics600", "epic-kitchens-100"))
    assert len(set(k400)) == 400 and len(set(k600)) == 600
    assert k400[:3] == ["abseiling", "air drumming", "answering questions"] and k400[-1] == "zumba"
    assert k600[:3] == ["abseiling", "acting in play", "adjusting glasses"] and k600[-1] == "zumba"
    # EPIC_100_noun_classes.csv ids 0.. then EPIC_100_verb_classes.csv ids 0.. (class_splits [300, 97])
    assert ek[:3] == ["tap", "spoon", "plate"] and ek[300:303] == ["take", "put", "wash"]


def test_registry_and_labels_ship_in_the_wheel():
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["vivit.zoo"]
    zoo = Path(registry.__file__).parent
    for file in [zoo / "registry.toml", *(zoo / "labels").glob("*.txt")]:
        assert any(fnmatch.fnmatch(str(file.relative_to(zoo)), p) for p in patterns), file
    assert "huggingface_hub" in pyproject["project"]["optional-dependencies"]["hub"][0]


@pytest.mark.parametrize("change, field", [
    ({"format": "onnx"}, "'format' = 'onnx' is not allowed; choose one of ['scenic', 'hf', 'vivit']"),
    ({"variant": "model2"}, "'variant' = 'model2' is not allowed"),
    ({"frames": 0}, "'frames' must be a positive integer"),
    ({"frames": "32"}, "'frames' must be a positive integer"),
    ({"views": "4x2"}, "'views' = '4x2' must be CLIPSxCROPS"),
    ({"sha256": "abc"}, "'sha256' must be 64 lower-case hex digits"),
    ({"normalisation": "imagenet"}, "'normalisation' = 'imagenet' is not allowed"),
    ({"colour": "red"}, "unknown field 'colour'"),
    ({"class_splits": [1, 1]}, "'class_splits' and 'split_names' go together"),
])
def test_invalid_registry_entries_name_the_field(zoo, change, field):
    zoo(bad={"url": "x", **change})
    with pytest.raises(ConfigError, match="model 'bad'") as e:
        registry.load_registry()
    assert field in str(e.value)


def test_missing_contract_field_is_named(zoo, tmp_path):
    (tmp_path / "extra.toml").write_text('[[model]]\nname = "m"\nformat = "scenic"\nurl = "x"\nvariant = "st"\nlabels = "kinetics400"\n')
    with pytest.raises(ConfigError, match="missing field 'frames'"):
        registry.load_registry()


def test_vivit_zoo_files_are_merged_in_order_and_same_name_overrides(zoo, tmp_path, monkeypatch):
    first = zoo(**{"vivit-b-16x2-kinetics400": {"url": "http://127.0.0.1:1/mine"}, "mine": {"url": "a"}})
    second = tmp_path / "second.toml"
    second.write_text('[[model]]\nname = "mine"\nformat = "vivit"\nurl = "b"\nvariant = "fe"\nframes = 4\nlabels = "kinetics600"\n')
    monkeypatch.setenv("VIVIT_ZOO", os.pathsep.join([str(first), str(second)]))
    entries = registry.load_registry()
    assert entries["vivit-b-16x2-kinetics400"].url == "http://127.0.0.1:1/mine"
    assert entries["vivit-b-16x2-kinetics400"].source == str(first)
    assert (entries["mine"].format, entries["mine"].url, entries["mine"].source) == ("vivit", "b", str(second))
    assert len(entries) == 7


# Download, cache, conversion ---------------------------------------------------------------------------
def test_download_convert_cache_then_offline_from_cache(zoo, server, tmp_path, monkeypatch):
    params = scenic_params()
    data = train_state(params)
    server.files["/tiny/checkpoint"] = data
    zoo(tiny={"url": server.url + "/tiny/checkpoint", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    model = vivit.load_pretrained("tiny", quiet=True)
    assert (model.config.variant, model.config.num_frames, model.config.image_size, model.config.num_classes) == ("st", 8, (16, 16), 2)
    assert model.labels == ["bright", "dark"]
    assert (model.preprocess.frames, model.preprocess.stride, model.preprocess.short_side, model.preprocess.crop,
            model.preprocess.views) == (8, 1, 16, 16, "1x1")
    torch.testing.assert_close(model.head.weight, torch.from_numpy(params["output_projection"]["kernel"].T))
    reference = vivit.weights.scenic.from_scenic(params, source_frames=8)  # the converter on the tree itself
    for k, v in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v)
    assert (tmp_path / "home/models/tiny/download/checkpoint").read_bytes() == data
    assert (model_dir(registry.get_entry("tiny")) / "model.safetensors").is_file()
    requests = len(server.log)

    server.stop()
    monkeypatch.setenv("VIVIT_OFFLINE", "1")
    monkeypatch.setattr("vivit.zoo.pretrained._convert", lambda *a: pytest.fail("converted again"))
    again = vivit.load_pretrained("tiny", quiet=True)
    assert len(server.log) == requests
    video = torch.randn(1, 3, 8, 16, 16)
    torch.testing.assert_close(again(video), model(video))
    assert again.labels == ["bright", "dark"]


def test_offline_without_cache_is_a_clear_error(zoo, server, monkeypatch):
    zoo(tiny={"url": server.url + "/tiny/checkpoint"})
    monkeypatch.setenv("VIVIT_OFFLINE", "1")
    with pytest.raises(VivitError, match="not in the cache .* VIVIT_OFFLINE=1"):
        vivit.load_pretrained("tiny", quiet=True)
    assert server.log == []


def test_interrupted_download_resumes_with_a_range_request(zoo, server, tmp_path):
    data = train_state(scenic_params())
    server.files["/big"] = data
    server.drop_after["/big"] = len(data) // 3
    dest = tmp_path / "cache" / "big"
    with pytest.raises(VivitError, match=f"download failed: {server.url}/big: connection closed after {len(data) // 3} of {len(data)} bytes"):
        download.fetch(server.url + "/big", dest, retries=1, quiet=True)
    assert not dest.exists() and dest.with_name("big.part").stat().st_size == len(data) // 3
    assert download.fetch(server.url + "/big", dest, retries=1, quiet=True) == dest
    assert dest.read_bytes() == data and not dest.with_name("big.part").exists()
    assert server.log[-1] == ("/big", f"bytes={len(data) // 3}-")


def test_a_dropped_connection_is_retried_within_one_call(zoo, server):
    data = train_state(scenic_params())
    server.files["/tiny/checkpoint"] = data
    server.drop_after["/tiny/checkpoint"] = 1000
    zoo(tiny={"url": server.url + "/tiny/checkpoint"})
    assert vivit.load_pretrained("tiny", quiet=True).labels == ["bright", "dark"]
    assert [r for _, r in server.log] == [None, "bytes=1000-"]


@pytest.mark.parametrize("status, attempts", [(404, 1), (500, download.RETRIES)])
def test_http_errors_are_one_line_and_cache_nothing(zoo, server, tmp_path, status, attempts):
    server.status["/tiny/checkpoint"] = status
    zoo(tiny={"url": server.url + "/tiny/checkpoint"})
    with pytest.raises(VivitError) as e:
        vivit.load_pretrained("tiny", quiet=True)
    message = str(e.value)
    assert message.startswith(f"download failed: {server.url}/tiny/checkpoint: HTTP {status}") and "\n" not in message
    assert len(server.log) == attempts
    assert cache_files(tmp_path) == []


@pytest.mark.parametrize("corrupt, reason", [
    (lambda data: data[: len(data) // 2], "not a Flax msgpack checkpoint"),
    (lambda data: b"<html>Access denied</html>", "not a Flax msgpack checkpoint"),
    (lambda data: train_state(scenic_params() | {"cls": np.zeros((1, 1, 8), np.float32)}), "shape mismatch"),
])
def test_a_corrupt_download_is_refused_and_not_cached(zoo, server, tmp_path, corrupt, reason):
    server.files["/tiny/checkpoint"] = corrupt(train_state(scenic_params()))
    zoo(tiny={"url": server.url + "/tiny/checkpoint"})
    with pytest.raises(VivitError, match=f"tiny: {server.url}/tiny/checkpoint is not a usable scenic checkpoint: .*{reason}"):
        vivit.load_pretrained("tiny", quiet=True)
    assert cache_files(tmp_path) == []


def test_a_checkpoint_missing_a_tensor_is_refused(zoo, server, tmp_path):
    params = scenic_params()
    del params["Transformer"]["encoderblock_0"]["MlpBlock_0"]["Dense_1"]
    server.files["/tiny/checkpoint"] = train_state(params)
    zoo(tiny={"url": server.url + "/tiny/checkpoint"})
    with pytest.raises(VivitError, match="missing tensor Transformer/encoderblock_0/MlpBlock_0/Dense_1/kernel;"):
        vivit.load_pretrained("tiny", quiet=True)
    assert cache_files(tmp_path) == []


@pytest.mark.parametrize("field, value, message", [
    ("sha256", "0" * 64, "has sha256 [0-9a-f]{64}, the registry says 0000"),
    ("size", 12, "has [0-9]+ bytes, the registry says 12"),
    ("variant", "fe", "holds a 'st' model, the registry says variant 'fe'"),
    ("labels", ["a", "b", "c"], "head has 2 classes, the registry's labels 3 names"),
])
def test_a_download_that_is_not_the_registered_file_is_refused(zoo, server, tmp_path, field, value, message):
    server.files["/tiny/checkpoint"] = train_state(scenic_params())
    zoo(tiny={"url": server.url + "/tiny/checkpoint", field: value})
    with pytest.raises(VivitError, match=message):
        vivit.load_pretrained("tiny", quiet=True)
    assert cache_files(tmp_path) == []


def test_vivit_zoo_url_replaces_the_official_base(zoo, server, monkeypatch):
    server.files["/mirror/kinetics_400/tiny/checkpoint"] = train_state(scenic_params())
    zoo(tiny={"url": OFFICIAL + "kinetics_400/tiny/checkpoint"})
    monkeypatch.setenv("VIVIT_ZOO_URL", server.url + "/mirror")
    assert vivit.load_pretrained("tiny", quiet=True).config.num_classes == 2
    assert server.log == [("/mirror/kinetics_400/tiny/checkpoint", None)]


def test_file_urls_and_paths_are_read_in_place(zoo, tmp_path):
    file = tmp_path / "local" / "checkpoint"
    file.parent.mkdir()
    file.write_bytes(train_state(scenic_params()))
    zoo(by_url={"url": file.as_uri()}, by_path={"url": str(file)})
    for name in ("by_url", "by_path"):
        assert vivit.load_pretrained(name, quiet=True).labels == ["bright", "dark"]
    assert not any("download" in f for f in cache_files(tmp_path))


def test_multi_head_entries_are_refused_before_any_download(zoo, server, tmp_path):
    with pytest.raises(VivitError, match="multi-head models are not supported yet"):
        vivit.load_pretrained("vivit-l-16x2-fe-epic-kitchens", quiet=True)
    assert cache_files(tmp_path) == []


def test_unknown_names_suggest_close_ones(zoo):
    with pytest.raises(ConfigError, match="no model named 'vivit-b-16x2-kinetic400'.*did you mean vivit-b-16x2-kinetics400"):
        vivit.load_pretrained("vivit-b-16x2-kinetic400")


def test_hugging_face_entry_from_a_prepopulated_offline_cache(zoo, tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    from safetensors.torch import save_file

    from vivit.weights import hf

    model = vivit.create_model("vivit-ti-16x2-st", num_classes=2, num_frames=8, image_size=16, width=32, depth=1,
                               num_heads=2, mlp_dim=64, tubelet=(2, 8, 8))
    snapshot = tmp_path / "hf/hub/models--someone--tiny-vivit/snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    config = {"model_type": "vivit", "architectures": ["VivitForVideoClassification"], **hf.hf_config(model.config),
              "id2label": {"0": "walking", "1": "running"}}
    (snapshot / "config.json").write_text(json.dumps(config))
    save_file(hf.to_hf(model), str(snapshot / "model.safetensors"))
    (tmp_path / "hf/hub/models--someone--tiny-vivit/refs").mkdir()
    (tmp_path / "hf/hub/models--someone--tiny-vivit/refs/main").write_text("a" * 40)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    zoo(**{"someone/tiny-vivit": {"format": "hf", "url": "someone/tiny-vivit", "labels": ["a", "b"]}})
    with pytest.warns(UserWarning, match="class names differ"):
        loaded = vivit.load_pretrained("someone/tiny-vivit", quiet=True)
    assert loaded.labels == ["walking", "running"] and loaded.preprocess.normalisation == "minus_one_one"
    video = torch.randn(1, 3, 8, 16, 16)
    torch.testing.assert_close(loaded(video), model.eval()(video))
    zoo(**{"someone/missing": {"format": "hf", "url": "someone/missing"}})
    with pytest.raises(VivitError, match="could not get someone/missing from the Hugging Face Hub \\(offline"):
        vivit.load_pretrained("someone/missing", quiet=True)


def test_load_pretrained_takes_a_folder_or_a_weights_file(zoo, tmp_path):
    model = vivit.create_model("vivit-ti-16x2-st", num_classes=2, num_frames=8, image_size=16, width=32, depth=1,
                               num_heads=2, mlp_dim=64, tubelet=(2, 8, 8))
    model.save_pretrained(tmp_path / "folder", ["x", "y"])
    video = torch.randn(1, 3, 8, 16, 16)
    for spec in (tmp_path / "folder", tmp_path / "folder" / "model.safetensors"):
        loaded = vivit.load_pretrained(spec)
        assert loaded.labels == ["x", "y"]
        torch.testing.assert_close(loaded(video), model.eval()(video))
    assert vivit.load_pretrained(tmp_path / "folder", num_classes=5).labels is None  # a fresh head


# The CLI --------------------------------------------------------------------------------------------
def run_cli(args: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(args)
    return code, out.getvalue()


def test_vivit_models_json_lists_entries_and_cache_state(zoo, server):
    server.files["/tiny/checkpoint"] = train_state(scenic_params())
    zoo(tiny={"url": server.url + "/tiny/checkpoint", "accuracy": 99.5})
    code, out = run_cli(["models", "--json"])
    listing = {m["name"]: m for m in json.loads(out)["models"]}
    assert code == 0 and len(listing) == 7
    assert (listing["tiny"]["cached"], listing["tiny"]["path"], listing["tiny"]["accuracy"]) == (False, None, 99.5)
    assert listing["vivit-l-16x2-fe-epic-kitchens"]["views"] == "4x1"
    vivit.load_pretrained("tiny", quiet=True)
    listing = {m["name"]: m for m in json.loads(run_cli(["models", "--json"])[1])["models"]}
    assert listing["tiny"]["cached"] is True and Path(listing["tiny"]["path"]).is_dir()
    assert listing["vivit-b-16x2-kinetics400"]["cached"] is False
    table = run_cli(["models"])[1]
    assert "tiny" in table and "vivit-l-16x2-fe-kinetics600" in table


def test_predict_a_video_with_a_model_name(zoo, server, tmp_path):
    from data_videos import good_video

    server.files["/tiny/checkpoint"] = train_state(scenic_params())
    zoo(tiny={"url": server.url + "/tiny/checkpoint"})
    video = good_video(tmp_path / "clip.mp4", frames=12, size=(24, 32))
    code, out = run_cli(["predict", str(video), "--model", "tiny", "--json", "--quiet", "--top-k", "2"])
    result = json.loads(out)
    assert code == 0 and result["failed"] == []
    predictions = result["results"][0]["predictions"]
    assert sorted(p["label"] for p in predictions) == ["bright", "dark"]
    assert sum(p["probability"] for p in predictions) == pytest.approx(1.0, abs=1e-5)
    code, again = run_cli(["predict", "tiny", str(video), "--json", "--quiet", "--top-k", "2"])  # positional form
    assert code == 0 and json.loads(again)["results"] == result["results"]
