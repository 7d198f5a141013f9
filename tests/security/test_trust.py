"""The trust model of docs/saving.md: what loads by default, what needs the user's word, and how."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
import torch

import slimkit as sk
from slimkit.core import trust
from slimkit.core.errors import UnsafeFileError
from slimkit.core.index import FORMAT_VERSION, integrity_hash, read_index
from slimkit.core.specs import ExportedModel, check_pt2, load_model
from slimkit.models.testing import ResidualNet


def _same(a, b, x):
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_valid_pt2_loads_without_trust_and_is_usable(tmp_path, build):
    path = build.pt2(tmp_path)
    check_pt2(path)  # a plain export holds no pickle
    model = sk.load(path)
    assert isinstance(model, ExportedModel)
    model.eval().train().eval()  # the unlifted module alone refuses eval()
    x = torch.randn(2, 4)
    assert model(x).shape == (2, 3)
    profile = sk.profile(model, example_inputs=(x[:1],), batch_sizes=(1,))
    assert profile.params == 4 * 8 + 8 + 8 * 3 + 3


def test_pt2_model_saves_with_its_program_inside_the_folder(tmp_path, build):
    model = sk.load(build.pt2(tmp_path))
    out = sk.save(model, tmp_path / "saved")
    assert (out / "model.pt2").is_file() and read_index(out)["source"] == "model.pt2"
    loaded = sk.load(out)
    _same(model, loaded, torch.randn(3, 4))


def test_pt2_pickle_is_refused_and_runs_nothing_unless_trusted(tmp_path, build):
    marker = tmp_path / "PWNED"
    path = build.evil_pt2(tmp_path, marker)
    with pytest.raises(UnsafeFileError, match="trust_pickle=True"):
        sk.load(path)
    assert not marker.exists()
    with pytest.raises(UnsafeFileError):  # trusted: torch unpickles it (the payload runs), then the archive is bad
        sk.load(path, trust_pickle=True)
    assert marker.exists()


def test_folder_source_from_an_unlisted_module_needs_allow_modules(tmp_path, monkeypatch):
    (tmp_path / "sksec_user_models.py").write_text(
        "from slimkit.models.testing import ResidualNet\n\ndef net():\n    return ResidualNet()\n"
    )
    monkeypatch.chdir(tmp_path)
    model = load_model("sksec_user_models:net")  # the current folder is on the import path
    out = sk.save(model, tmp_path / "o")
    x = model.example_inputs()[0]
    _same(model, sk.load(out), x)  # this process named the module: trusted here
    monkeypatch.setattr(trust, "_trusted_modules", set())
    with pytest.raises(UnsafeFileError, match=r"allow_modules=\['sksec_user_models'\].*--allow-module"):
        sk.load(out)
    _same(model, sk.load(out, allow_modules=["sksec_user_models"]), x)
    monkeypatch.setenv("SLIMKIT_ALLOW_MODULES", "sksec_user_models")
    _same(model, sk.load(out), x)


@pytest.mark.slow
def test_a_fresh_process_refuses_an_unlisted_module(tmp_path, monkeypatch):
    (tmp_path / "sksec_fresh.py").write_text("from slimkit.models.testing import ResidualNet as net\n")
    monkeypatch.chdir(tmp_path)
    sk.save(load_model("sksec_fresh:net"), tmp_path / "o")
    code = "import slimkit as sk, sys; sk.load(sys.argv[1])"
    env = {k: v for k, v in os.environ.items() if k != "SLIMKIT_ALLOW_MODULES"}
    run = subprocess.run([sys.executable, "-c", code, "o"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert run.returncode != 0 and "UnsafeFileError" in run.stderr and "--allow-module sksec_fresh" in run.stderr


def test_factory_must_be_defined_in_the_allowed_module(tmp_path, build):
    # slimkit.models is allowed, but not what it merely imports (torch, importlib, ...)
    folder = build.edit(build.saved(tmp_path), lambda i: i.update(source="slimkit.models:importlib.invalidate_caches"))
    with pytest.raises(UnsafeFileError, match="defined in 'importlib'"):
        sk.load(folder)


def test_version_1_folder_loads_with_a_warning(tmp_path, build):
    folder = build.saved(tmp_path)

    def downgrade(index):
        index["format_version"] = 1
        index.pop("integrity")

    build.edit(folder, downgrade, rehash=False)
    with pytest.warns(UserWarning, match="format version 1"):
        model = sk.load(folder)
    assert isinstance(model, ResidualNet)


def test_version_2_without_integrity_is_refused(tmp_path, build):
    folder = build.edit(build.saved(tmp_path), lambda i: i.pop("integrity"), rehash=False)
    with pytest.raises(UnsafeFileError, match="integrity is missing"):
        sk.load(folder)


def test_weights_checkpoint_honours_trust_pickle(tmp_path):
    import argparse

    state = dict(ResidualNet().state_dict())
    torch.save({"state_dict": state, "args": argparse.Namespace(lr=1)}, tmp_path / "w.pt")
    with pytest.raises(UnsafeFileError, match="trust_pickle=True"):
        load_model("slimkit.models.testing:ResidualNet", weights=tmp_path / "w.pt")
    model = load_model("slimkit.models.testing:ResidualNet", weights=tmp_path / "w.pt", trust_pickle=True)
    torch.testing.assert_close(model.head.weight, state["head.weight"])


@pytest.mark.parametrize(("umask", "folder_mode", "file_mode"), [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)])
def test_saved_permissions_follow_the_umask(tmp_path, umask, folder_mode, file_mode):
    old = os.umask(umask)
    try:
        out = sk.save(ResidualNet(), tmp_path / "o")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == folder_mode
    for name in ("model.safetensors", "slimkit.json"):
        assert stat.S_IMODE((out / name).stat().st_mode) == file_mode


def test_hf_folder_builds_the_class_its_config_names(tmp_path):
    import transformers

    config = transformers.BertConfig(
        hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8, vocab_size=30, num_labels=3
    )
    config.architectures = ["BertForSequenceClassification"]
    transformers.BertForSequenceClassification(config).save_pretrained(tmp_path / "bert")
    model = sk.load(f"hf:{tmp_path / 'bert'}")
    assert type(model).__name__ == "BertForSequenceClassification"
    bare = load_model(f"hf:{tmp_path / 'bert'}", pretrained=False)
    assert type(bare).__name__ == "BertForSequenceClassification"


def test_saved_index_is_json_with_integrity(tmp_path):
    out = sk.save(ResidualNet(), tmp_path / "o")
    index = json.loads((out / "slimkit.json").read_text())
    assert index["format_version"] == FORMAT_VERSION == 2
    assert index["integrity"] == integrity_hash(index)


@pytest.mark.slow
def test_valid_pt2_is_profiled_and_exported_from_the_cli(tmp_path, monkeypatch, capsys, build):
    import numpy as np

    from slimkit.cli import main

    monkeypatch.chdir(tmp_path)
    path = build.pt2(tmp_path)
    np.savez(
        tmp_path / "d.npz", x=np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32), y=np.arange(20) % 3
    )
    for argv in (
        ["profile", str(path), "--data", "d.npz", "--batch-sizes", "1"],
        ["export", str(path), "--data", "d.npz", "--out", "exported"],
    ):
        try:
            main(argv)
        except SystemExit as exc:
            assert exc.code in (0, None), capsys.readouterr().err
    assert (tmp_path / "exported" / "model.onnx").is_file()


def test_save_refuses_to_write_through_a_planted_symlink(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out").symlink_to(elsewhere)
    with pytest.raises(UnsafeFileError, match="symbolic link"):
        sk.save(ResidualNet(), tmp_path / "out")
    assert list(elsewhere.iterdir()) == []


def _rewrite(path, change):
    import zipfile

    with zipfile.ZipFile(path) as archive:
        members = [(i.filename, archive.read(i.filename)) for i in archive.infolist()]
    root = members[0][0].split("/", 1)[0]
    members = change(root, members)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members:
            archive.writestr(name, data)


def _constant_kind(prefix):
    def change(root, members):
        out = []
        for name, data in members:
            if name.endswith("data/constants/model_constants_config.json"):
                data = json.dumps({"config": {"c": {"path_name": f"{prefix}0", "use_pickle": False}}}).encode()
            out.append((name, data))
        return out

    return change


PT2_REFUSALS = [
    ("custom-object", _constant_kind("custom_obj_"), "constants entry 'c' is a pickle"),
    ("opaque-object", _constant_kind("opaque_obj_"), "constants entry 'c' is a pickle"),
    ("legacy-weights", lambda root, m: [*m, (f"{root}/data/weights/model.pt", b"x")], "legacy format"),
    ("compiled-code", lambda root, m: [*m, (f"{root}/data/aotinductor/model/x.so", b"x")], "compiled code"),
    ("old-format", lambda root, m: [(n, d) for n, d in m if not n.endswith("/archive_format")], "old-format"),
    ("no-program", lambda root, m: [(n, d) for n, d in m if "/models/" not in n], "no exported program"),
]


@pytest.mark.parametrize(("change", "message"), [r[1:] for r in PT2_REFUSALS], ids=[r[0] for r in PT2_REFUSALS])
def test_pt2_archive_entries_that_could_run_code_are_refused(tmp_path, build, change, message):
    path = build.pt2(tmp_path)
    _rewrite(path, change)
    with pytest.raises(UnsafeFileError, match=message):
        check_pt2(path)
    with pytest.raises(UnsafeFileError, match=message):
        sk.load(path)


def test_not_a_zip_is_one_clear_error(tmp_path):
    (tmp_path / "x.pt2").write_bytes(b"not a zip at all")
    with pytest.raises(UnsafeFileError, match="not a valid torch.export archive"):
        sk.load(tmp_path / "x.pt2")
