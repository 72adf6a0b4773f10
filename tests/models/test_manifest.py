"""The typed manifest: one reader, one writer, the recipe, and the integrity of manifest.json."""

from __future__ import annotations

import dataclasses
import io
import json
import struct
import zipfile

import pytest

from mlsys_cli import bundle as container
from mlsys_cli.errors import InputError
from mlsys_cli.models.bundle import ModelBundle
from mlsys_cli.models.manifest import FORMAT_VERSION, Manifest, Recipe, model_writer, read_manifest
from tests.conftest import assert_clean_error, run_cli, run_proc


@pytest.fixture(scope="module")
def model(small_tables, tmp_path_factory):
    """A calibrated linear model (it has skops members) and the tables it was trained on."""
    t = small_tables["binary"]
    path = tmp_path_factory.mktemp("manifest") / "m.mlsys"
    result = run_cli("train", t["train"], "--valid", t["valid"], "--target", t["target"], "--model", "linear",
                     "--calibrate", "sigmoid", "--seed", "3", "-o", path)
    assert result.code == 0, result.stderr
    return path, t


def _rewrite(src, dst, manifest=None, member=None):
    """Copy a bundle, replacing manifest.json by ``manifest(dict) -> dict`` and a member's bytes by ``member``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "manifest.json" and manifest is not None:
                data = json.dumps(manifest(json.loads(data)), indent=2, sort_keys=True).encode()
            elif member is not None and info.filename == member[0]:
                data = member[1](data)
            zout.writestr(info, data)


def test_recipe_from_manifest_is_the_training_recipe(model):
    path, t = model
    recipe = Recipe.from_manifest(path)
    assert (recipe.family, recipe.task, recipe.target, recipe.seed) == ("linear", "binary", t["target"], 3)
    assert recipe.calibrate == "sigmoid" and recipe.features["preset"] == "linear"
    assert recipe.command[:2] == ("train", str(t["train"])) and recipe.data["train"][0]["sha256"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.seed = 4
    with pytest.raises(TypeError):
        recipe.params["C"] = 2.0  # read-only all the way down
    assert Recipe.from_dict(recipe.to_dict()) == recipe


def test_read_manifest_round_trips_and_matches_the_bundle(model):
    path, _ = model
    manifest = read_manifest(path)
    assert manifest.format == FORMAT_VERSION and manifest.kind == "model" and manifest.predictor["kind"] == "single"
    assert Manifest.from_dict(manifest.to_dict()).to_dict() == manifest.to_dict() == ModelBundle.load(path).manifest
    assert manifest.classes == (False, True) and manifest.recipe == Recipe.from_manifest(path)


def test_manifest_is_verified_without_deserialising_any_member(model, monkeypatch):
    path, _ = model
    assert any(n.endswith(".skops") for n in zipfile.ZipFile(path).namelist())

    def refuse():
        raise AssertionError("a member was deserialised")

    monkeypatch.setattr(container, "skops_io", refuse)
    assert read_manifest(path).recipe.calibrate == "sigmoid"


def test_resaving_a_loaded_bundle_gives_the_same_bytes(model, tmp_path):
    path, _ = model
    ModelBundle.load(path).save(tmp_path / "again.mlsys")
    assert (tmp_path / "again.mlsys").read_bytes() == path.read_bytes()


def test_model_writer_refuses_a_manifest_without_a_recipe():
    with pytest.raises(InputError, match="no 'recipe'"):
        model_writer({"task": "binary", "target": "y", "input_schema": []}, predictor=None)


@pytest.mark.parametrize("edit", [
    lambda m: {**m, "classes": list(reversed(m["classes"]))},
    lambda m: {**m, "metrics": {**m["metrics"], "valid": {**m["metrics"]["valid"], "auc": 0.999}}},
    lambda m: {**m, "members": {**m["members"], "model/extra.bin": "0" * 64}},
])
def test_an_edited_manifest_is_refused(model, tmp_path, edit):
    path, _ = model
    bad = tmp_path / "edited.mlsys"
    _rewrite(path, bad, manifest=edit)
    with pytest.raises(InputError, match="manifest.json fails its sha256 check"):
        read_manifest(bad)


def test_predict_with_an_edited_class_list_or_metrics_exits_3(model, tmp_path):
    path, t = model
    flipped, boasting = tmp_path / "flipped.mlsys", tmp_path / "boasting.mlsys"
    _rewrite(path, flipped, manifest=lambda m: {**m, "classes": list(reversed(m["classes"]))})
    _rewrite(path, boasting, manifest=lambda m: {**m, "metrics": {**m["metrics"], "valid": {"auc": 1.0}}})
    for bad in (flipped, boasting):
        result = run_proc("predict", bad, t["test"], "-o", tmp_path / "p.parquet")
        assert_clean_error(result, 3)
        assert "manifest.json fails its sha256 check" in result.stderr
        assert not (tmp_path / "p.parquet").exists()
    assert_clean_error(run_cli("info", boasting), 3)


def _local_data_offset(raw: bytes, info: zipfile.ZipInfo) -> int:
    """Where a member's compressed bytes start (after its local header)."""
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26: info.header_offset + 30])
    return info.header_offset + 30 + name_len + extra_len


def test_a_broken_deflate_stream_is_a_damaged_bundle(model, tmp_path):
    path, t = model
    raw = bytearray(path.read_bytes())
    info = zipfile.ZipFile(io.BytesIO(bytes(raw))).getinfo("features/featurizer.json")
    assert info.compress_type == zipfile.ZIP_DEFLATED and info.compress_size > 1
    raw[_local_data_offset(bytes(raw), info)] = 0xFF  # final block of the reserved type 3: inflate fails
    bad = tmp_path / "inflate.mlsys"
    bad.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="zlib|not a valid mlsys bundle") as caught:
        ModelBundle.load(bad)
    assert "error" in caught.value.message
    result = run_proc("predict", bad, t["test"], "-o", tmp_path / "p.parquet")
    assert_clean_error(result, 3)


def test_a_bundle_written_before_the_manifest_digest_is_refused_with_a_rebuild_hint(model, tmp_path):
    """What the previous mlsys wrote: format 1, no manifest_sha256."""
    path, t = model

    def as_before(m):
        return {**{k: v for k, v in m.items() if k != container.DIGEST}, "format": 1}

    old = tmp_path / "old.mlsys"
    _rewrite(path, old, manifest=as_before)
    with pytest.raises(InputError, match="older mlsys") as caught:
        read_manifest(old)
    assert "rebuild" in caught.value.hint and "recipe.command" in caught.value.hint
    result = run_cli("predict", old, t["test"], "-o", tmp_path / "p.parquet")
    assert_clean_error(result, 3)
    assert "hint: rebuild" in result.stderr


def test_a_manifest_without_its_digest_is_refused(model, tmp_path):
    path, _ = model
    bad = tmp_path / "nodigest.mlsys"
    _rewrite(path, bad, manifest=lambda m: {k: v for k, v in m.items() if k != container.DIGEST})
    with pytest.raises(InputError, match="manifest.json fails its sha256 check"):
        read_manifest(bad)


def test_an_unknown_manifest_key_is_a_newer_schema(model):
    m = read_manifest(model[0]).to_dict()
    with pytest.raises(InputError, match="unknown manifest key") as caught:
        Manifest.from_dict({**m, "quantum": 1})
    assert "newer mlsys" in caught.value.hint
    with pytest.raises(InputError, match="unknown recipe key"):
        Manifest.from_dict({**m, "recipe": {**m["recipe"], "quantum": 1}})
