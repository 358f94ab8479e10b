"""Pretrained models by name: registry, download (loopback HTTP server), cache, conversion, CLI.

Offline: every URL is a server on 127.0.0.1 started by the test (tests/zoo_fixtures.py), serving Scenic
checkpoints written as Flax writes them, with the Scenic parameter names spelled out."""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import io
import json
import shutil
import threading
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import torch
from zoo_fixtures import cache_files, flax_msgpack, scenic_params, server, train_state, zoo  # noqa: F401 (fixtures)

import vivit
from vivit.cli import main
from vivit.errors import ConfigError, VivitError
from vivit.zoo import download, registry
from vivit.zoo.pretrained import model_dir

OFFICIAL = "https://storage.googleapis.com/scenic-bucket/vivit/"


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


def test_an_entry_with_only_the_contract_keys(zoo, server, tmp_path):
    server.files["/tiny/checkpoint"] = train_state(scenic_params())
    (tmp_path / "extra.toml").write_text(f"""[[model]]
name = "bare"
format = "scenic"
url = "{server.url}/tiny/checkpoint"
variant = "st"
frames = 8
labels = ["bright", "dark"]
""")
    model = vivit.load_pretrained("bare", quiet=True)
    p = model.preprocess
    assert (p.frames, p.stride, p.short_side, p.crop, p.normalisation, p.views) == (8, 2, None, 16, "minus_one_one", "4x3")
    assert p.train_config()["data"]["augment"] == {"normalization": "minus_one_one"}  # short side: 16 * 256 / 224


def test_a_changed_registry_entry_is_converted_again(zoo, server):
    server.files["/v1/checkpoint"] = train_state(scenic_params(seed=1))
    server.files["/v2/checkpoint"] = train_state(scenic_params(seed=2))
    zoo(tiny={"url": server.url + "/v1/checkpoint"})
    first = vivit.load_pretrained("tiny", quiet=True).head.weight
    zoo(tiny={"url": server.url + "/v2/checkpoint"})  # e.g. a VIVIT_ZOO override pointing elsewhere
    second = vivit.load_pretrained("tiny", quiet=True).head.weight
    torch.testing.assert_close(second, torch.from_numpy(scenic_params(seed=2)["output_projection"]["kernel"].T))
    assert not torch.equal(first, second)


def test_concurrent_first_loads_download_once(zoo, server):
    server.files["/tiny/checkpoint"] = train_state(scenic_params())
    server.stall["/tiny/checkpoint"] = 0.3  # the first transfer is slow: the other loader must wait, not download
    zoo(tiny={"url": server.url + "/tiny/checkpoint"})
    models = []
    threads = [threading.Thread(target=lambda: models.append(vivit.load_pretrained("tiny", quiet=True))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(models) == 2 and server.log == [("/tiny/checkpoint", None)]
    torch.testing.assert_close(models[0].head.weight, models[1].head.weight)


def test_a_stalled_server_times_out_and_is_retried(zoo, server, tmp_path, monkeypatch):
    data = train_state(scenic_params())
    server.files["/slow"] = data
    server.stall["/slow"] = 1.0
    monkeypatch.setattr(download, "TIMEOUT_S", 0.2)
    dest = tmp_path / "slow"
    with pytest.raises(VivitError, match=f"download failed: {server.url}/slow: network error: .*timed out"):
        download.fetch(server.url + "/slow", dest, retries=1, quiet=True)
    server.stall["/slow"] = 1.0
    assert download.fetch(server.url + "/slow", dest, retries=2, quiet=True).read_bytes() == data
    assert len(server.log) == 3


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


def test_vivit_format_entries_a_folder_or_a_served_safetensors(zoo, server, tmp_path):
    model = vivit.create_model("vivit-ti-16x2-fe", num_classes=2, num_frames=8, image_size=16, width=32, depth=1,
                               temporal_depth=1, num_heads=2, mlp_dim=64, tubelet=(2, 8, 8))
    model.save_pretrained(tmp_path / "ours")
    for name in ("model.safetensors", "config.json"):
        server.files[f"/ours/{name}"] = (tmp_path / "ours" / name).read_bytes()
    common = {"format": "vivit", "variant": "fe"}
    zoo(folder={**common, "url": str(tmp_path / "ours")}, served={**common, "url": server.url + "/ours/model.safetensors"})
    video = torch.randn(1, 3, 8, 16, 16)
    for name in ("folder", "served"):
        loaded = vivit.load_pretrained(name, quiet=True)
        assert loaded.labels == ["bright", "dark"]
        torch.testing.assert_close(loaded(video), model.eval()(video))
    assert sorted(path for path, _ in server.log) == ["/ours/config.json", "/ours/model.safetensors"]


def test_unknown_names_suggest_close_ones(zoo):
    with pytest.raises(ConfigError, match="no model named 'vivit-b-16x2-kinetic400'.*did you mean vivit-b-16x2-kinetics400"):
        vivit.load_pretrained("vivit-b-16x2-kinetic400")


def tiny_transformers_vivit(folder: Path, **save: Any):
    """A tiny `transformers.VivitForVideoClassification`, saved by transformers itself into `folder`
    (`save`: save_pretrained options, e.g. max_shard_size)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.VivitConfig(image_size=16, num_frames=8, tubelet_size=[2, 8, 8], hidden_size=32,
                                      num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                      id2label={0: "walking", 1: "running"}, label2id={"walking": 0, "running": 1})
    torch.manual_seed(0)
    model = transformers.VivitForVideoClassification(config).eval()
    model.save_pretrained(folder, **save)
    return model


def hub_offline(monkeypatch, hf_home: Path) -> None:
    """HF_HOME and HF_HUB_OFFLINE=1 (huggingface_hub reads HF_HOME when imported: its cache path is patched too)."""
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))


@pytest.mark.parametrize("where", ["hub cache", "folder"])
def test_hugging_face_entries_load_with_transformers_logits(zoo, tmp_path, monkeypatch, where):
    pytest.importorskip("huggingface_hub")
    repo = tmp_path / "hf/hub/models--someone--tiny-vivit"
    folder = repo / "snapshots" / ("a" * 40) if where == "hub cache" else tmp_path / "folder"
    reference = tiny_transformers_vivit(folder)
    if where == "hub cache":  # as huggingface_hub lays a downloaded repo out; offline, nothing else is read
        (repo / "refs").mkdir()
        (repo / "refs/main").write_text("a" * 40)
        hub_offline(monkeypatch, tmp_path / "hf")
    zoo(**{"someone/tiny-vivit": {"format": "hf", "url": "someone/tiny-vivit" if where == "hub cache" else str(folder),
                                  "labels": ["a", "b"]}})
    with pytest.warns(UserWarning, match="class names differ"):
        model = vivit.load_pretrained("someone/tiny-vivit", quiet=True)
    assert model.labels == ["walking", "running"] and model.preprocess.normalisation == "minus_one_one"
    pixel_values = torch.randn(2, 8, 3, 16, 16)  # HF layout (B, T, C, H, W)
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values.transpose(1, 2)), reference(pixel_values=pixel_values).logits,
                                   atol=1e-5, rtol=1e-4)


def hub_snapshot(monkeypatch, remote: Path, local: Path) -> list[list[str]]:
    """`huggingface_hub.snapshot_download` serving the files of `remote` that match `allow_patterns` (fnmatch, as
    huggingface_hub) into the snapshot folder `local`; returns the patterns of each call."""
    hub = pytest.importorskip("huggingface_hub")
    calls: list[list[str]] = []

    def snapshot_download(repo_id: str, allow_patterns: list[str], local_files_only: bool = False) -> str:
        calls.append(list(allow_patterns))
        local.mkdir(parents=True, exist_ok=True)
        for file in remote.iterdir():
            if any(fnmatch.fnmatch(file.name, pattern) for pattern in allow_patterns):
                shutil.copy(file, local / file.name)
        return str(local)

    monkeypatch.setattr(hub, "snapshot_download", snapshot_download)
    return calls


@torch.no_grad()
def test_a_sharded_hub_repo_fetches_its_index_then_the_shards_it_names(zoo, tmp_path, monkeypatch):
    remote = tmp_path / "remote"
    reference = tiny_transformers_vivit(remote, max_shard_size="20KB")
    (remote / "flax_model.msgpack").write_bytes(b"not needed")
    shards = sorted(set(json.loads((remote / "model.safetensors.index.json").read_text())["weight_map"].values()))
    assert len(shards) > 1
    calls = hub_snapshot(monkeypatch, remote, tmp_path / "snapshot")
    zoo(**{"someone/sharded": {"format": "hf", "url": "someone/sharded", "labels": ["walking", "running"]}})
    model = vivit.load_pretrained("someone/sharded", quiet=True)
    assert "model.safetensors.index.json" in calls[0] and "config.json" in calls[0] and calls[1:] == [shards]
    assert sorted(p.name for p in (tmp_path / "snapshot").iterdir()) == sorted(
        ["config.json", "model.safetensors.index.json", *shards])
    pixel_values = torch.randn(2, 8, 3, 16, 16)
    torch.testing.assert_close(model(pixel_values.transpose(1, 2)), reference(pixel_values=pixel_values).logits,
                               atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("file", ["model.safetensors", "model.safetensors.index.json"])
@torch.no_grad()
def test_load_pretrained_takes_a_transformers_weights_file(tmp_path, file):
    """A weights file beside transformers' config.json (model_type) is read as the HF ViViT it is."""
    shard = {"max_shard_size": "20KB"} if file.endswith(".index.json") else {}
    reference = tiny_transformers_vivit(tmp_path / "hf", **shard)
    model = vivit.load_pretrained(tmp_path / "hf" / file)
    assert model.labels == ["walking", "running"]
    pixel_values = torch.randn(2, 8, 3, 16, 16)
    torch.testing.assert_close(model(pixel_values.transpose(1, 2)), reference(pixel_values=pixel_values).logits,
                               atol=1e-5, rtol=1e-4)


def test_a_hub_repo_missing_from_the_offline_cache_is_a_clear_error(zoo, tmp_path, monkeypatch):
    hub_offline(monkeypatch, tmp_path / "hf")
    zoo(**{"someone/missing": {"format": "hf", "url": "someone/missing"}})
    with pytest.raises(VivitError, match="could not get someone/missing from the Hugging Face Hub \\(offline"):
        vivit.load_pretrained("someone/missing", quiet=True)
    assert cache_files(tmp_path) == []


def test_only_the_parameters_are_decoded(tmp_path):
    from vivit.weights.scenic import restore_checkpoint
    from vivit.zoo.scenic_stream import read_params

    undecodable = msgpack.ExtType(1, b"not an array")  # optimiser state that decoding would choke on
    params = scenic_params()
    pos = params["Transformer"]["posembed_input"]["pos_embedding"]
    chunked = dict(params)  # as Flax writes arrays over its chunk size: flat pieces plus the shape
    chunked["Transformer"] = {**params["Transformer"], "posembed_input": {"pos_embedding": {
        "__msgpack_chunked_array__": True, "shape": {str(i): n for i, n in enumerate(pos.shape)},
        "chunks": {str(i): c for i, c in enumerate(np.array_split(pos.reshape(-1), 3))}}}}
    file = tmp_path / "checkpoint"
    file.write_bytes(flax_msgpack({"optimizer": {"state": {"param_states": undecodable}, "target": chunked},
                                   "global_step": undecodable}))
    read = read_params(file)
    np.testing.assert_array_equal(read["Transformer"]["encoderblock_0"]["LayerNorm_1"]["scale"],
                                  params["Transformer"]["encoderblock_0"]["LayerNorm_1"]["scale"])
    np.testing.assert_array_equal(read["Transformer"]["posembed_input"]["pos_embedding"], pos)
    with pytest.raises(Exception):  # the whole-file reader decodes everything
        restore_checkpoint(file)


def test_labels_from_a_file_next_to_the_registry(zoo, tmp_path):
    (tmp_path / "my_labels.txt").write_text("left\nright\n")
    zoo(tiny={"url": str(tmp_path / "checkpoint"), "labels": "my_labels.txt"})
    (tmp_path / "checkpoint").write_bytes(train_state(scenic_params()))
    assert vivit.load_pretrained("tiny", quiet=True).labels == ["left", "right"]
    zoo(tiny={"url": str(tmp_path / "checkpoint"), "labels": "kinetics-700"})
    with pytest.raises(VivitError, match="labels 'kinetics-700' is neither a shipped label set"):
        vivit.load_pretrained("tiny", quiet=True)


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


def test_eval_by_model_name_uses_the_registry_preprocessing(zoo, server, tmp_path):
    from engine_fixtures import write_brightness_videos

    server.files["/tiny/checkpoint"] = train_state(scenic_params())
    zoo(tiny={"url": server.url + "/tiny/checkpoint"})
    data = write_brightness_videos(tmp_path / "data", per_class=0, val_per_class=2, frames=8, size=16)
    code, out = run_cli(["eval", "tiny", str(data), "--views", "1x1", "--json", "--quiet", "--workers", "0"])
    report = json.loads(out)
    assert code == 0 and report["num_samples"] == 4 and report["classes"] == ["bright", "dark"]
    from vivit.engine.checkpoint import load_model
    from vivit.engine.evaluate import eval_preprocessing

    stride, augment = eval_preprocessing(load_model("tiny").train_config)
    assert (stride, augment.short_side, augment.normalization) == (1, 16, "minus_one_one")
