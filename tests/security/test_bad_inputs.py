"""Every bad input of issue 15 gets one line, exit 2, no traceback, and nothing written.

One row per case: a function that builds the input under ``tmp_path`` (the current folder
during the run) and returns the CLI arguments, and the pattern the one-line message must
match. The CLI runs in-process (``slimkit.cli.main``); the cases that would kill or hang
the process if the check failed run as a subprocess with a timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from slimkit.cli import main

HERE = Path(__file__).parent


def _profile(target) -> list[str]:
    return ["profile", str(target), "--batch-sizes", "1"]


# --- saved folders ------------------------------------------------------------------------------


def _source(value):
    def make(tmp, b):
        return _profile(b.edit(b.saved(tmp), lambda i: i.update(source=value)))

    return make


def _own_path_source(tmp, b):
    folder = b.saved(tmp)
    return _profile(b.edit(folder, lambda i: i.update(source=str(folder))))


def _weights_file(value):
    def make(tmp, b):
        return _profile(b.edit(b.saved(tmp), lambda i: i["weights"].update(file=value)))

    return make


def _no_sha(tmp, b):
    return _profile(b.edit(b.saved(tmp), lambda i: i["weights"].pop("sha256")))


def _empty_sha(tmp, b):
    return _profile(b.edit(b.saved(tmp), lambda i: i["weights"].update(sha256="")))


def _swapped_weights_without_sha(tmp, b):
    folder = b.saved(tmp)
    other = b.saved(tmp / "other")
    (folder / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    return _profile(b.edit(folder, lambda i: i["weights"].pop("sha256")))


def _edited_transform(tmp, b):
    def change(index):
        index["transforms"][0]["state"]["pruned"] = {"x": [1, 1]}

    return _profile(b.edit(b.saved(tmp, "pruned"), change, rehash=False))


def _field(key, value):
    def make(tmp, b):
        return _profile(b.edit(b.saved(tmp), lambda i: i.update({key: value})))

    return make


def _transform_without_verb(tmp, b):
    return _profile(b.edit(b.saved(tmp, "pruned"), lambda i: i["transforms"][0].pop("verb")))


def _nested(tmp, b):
    folder = b.saved(tmp)
    (folder / "slimkit.json").write_text("[" * 200_000 + "]" * 200_000)
    return _profile(folder)


def _keeps(value):
    def make(tmp, b):
        def change(index):
            keeps = index["transforms"][0]["state"]["keeps"]
            first = next(iter(keeps))
            keeps[first] = [value] if not isinstance(value, str) else keeps[first]
            if isinstance(value, str):
                keeps[value] = keeps.pop(first)

        return _profile(b.edit(b.saved(tmp, "pruned"), change))

    return make


def _quant_layer_method(tmp, b):
    def change(index):
        layers = index["transforms"][0]["state"]["layers"]
        next(iter(layers.values()))["method"] = "nope"

    return _profile(b.edit(b.saved(tmp, "quantized"), change))


def _svd_rank(value):
    def make(tmp, b):
        def change(index):
            layers = index["transforms"][0]["state"]["layers"]
            next(iter(layers.values()))["rank"] = value

        return _profile(b.edit(b.saved(tmp, "svd"), change))

    return make


def _pt2_source_in_folder(tmp, b):
    folder = b.saved(tmp)
    b.evil_pt2(folder, tmp / "PWNED", name="model.pt2")
    return _profile(b.edit(folder, lambda i: i.update(source="model.pt2")))


# --- model and data specs -----------------------------------------------------------------------


def _evil_pt2(command):
    def make(tmp, b):
        path = b.evil_pt2(tmp, tmp / "PWNED")
        return _profile(path) if command == "profile" else ["export", str(path), "--out", str(tmp / "out")]

    return make


def _evil_pt2_sample_inputs(tmp, b):
    return _profile(b.evil_pt2(tmp, tmp / "PWNED", where="sample_inputs"))


def _module(name, code, spec_suffix=":net", data=False):
    def make(tmp, b):
        (tmp / f"{name}.py").write_text(code)
        if data:
            return [*_profile("slimkit.models.testing:ResidualNet"), "--data", f"{name}:load"]
        return _profile(f"{name}{spec_suffix}")

    return make


def _npz(build):
    def make(tmp, b):
        return [*_profile("slimkit.models.testing:ResidualNet"), "--data", str(build(tmp, b))]

    return make


def _string_x(tmp, b):
    np.savez(tmp / "d.npz", x=np.array(["a", "b"]), y=np.array([0, 1]))
    return tmp / "d.npz"


def _weights(dtype):
    def make(tmp, b):
        from slimkit.models.testing import ResidualNet

        state = {k: v.to(dtype) for k, v in ResidualNet().state_dict().items()}
        save_file(state, str(tmp / "w.safetensors"))
        return [*_profile("slimkit.models.testing:ResidualNet"), "--weights", str(tmp / "w.safetensors")]

    return make


def _hf(config_text, weights=False):
    def make(tmp, b):
        folder = tmp / "hfmodel"
        folder.mkdir()
        (folder / "config.json").write_text(config_text)
        return _profile(f"hf:{folder}")

    return make


# --- recipes ------------------------------------------------------------------------------------


def _recipe(text: str | bytes, labels=(0, 1, 2, 3) * 5):
    def make(tmp, b):
        path = tmp / "recipe.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        data = b.images_npz(tmp / "d.npz", list(labels))
        return [
            "compress", str(path), "--out", str(tmp / "out"),
            "--model", "slimkit.models.testing:ResidualNet", "--data", str(data),
        ]  # fmt: skip

    return make


FINETUNE = "stages:\n  - finetune: {epochs: 1}\n"

CASES = [
    # saved folders: source
    ("source-own-path", _own_path_source, r"source .* is not allowed"),
    ("source-unknown-module", _source("json:loads"), r"not allowed.*--allow-module json"),
    ("source-garbage", _source("!!"), r"source '!!' is not allowed"),
    # saved folders: weights file and checksum
    ("weights-outside", _weights_file("../x.safetensors"), r"field weights\.file"),
    ("weights-absolute", _weights_file("/etc/passwd"), r"field weights\.file"),
    ("weights-etc-passwd", _weights_file("../../../../etc/passwd"), r"field weights\.file"),
    ("sha-missing", _no_sha, r"field weights\.sha256: Field required"),
    ("sha-empty", _empty_sha, r"field weights\.sha256"),
    ("swapped-weights-no-sha", _swapped_weights_without_sha, r"field weights\.sha256"),
    ("transform-edited", _edited_transform, r"was edited after it was saved"),
    # saved folders: malformed index
    ("transforms-number", _field("transforms", 5), r"field transforms: "),
    ("transforms-dict", _field("transforms", {"a": 1}), r"field transforms: "),
    ("transform-no-verb", _transform_without_verb, r"field transforms\[0\]\.verb: Field required"),
    ("format-version-text", _field("format_version", "abc"), r"field format_version"),
    ("weights-string", _field("weights", "x"), r"field weights: "),
    ("nested-brackets", _nested, r"corrupt or unreadable|nests deeper"),
    ("keeps-huge", _keeps(10**12), r"field transforms\[0\]\.state\.keeps\..*out of range"),
    ("keeps-negative", _keeps(-5), r"field transforms\[0\]\.state\.keeps\..*-5 is out of range"),
    ("keeps-path-name", _keeps("../../etc/passwd"), r"is not a module name"),
    ("quant-layer-method", _quant_layer_method, r"field transforms\[0\] \(quantize:int8-dynamic\)"),
    ("svd-rank-huge", _svd_rank(10**10), r"field transforms\[0\]\.state\.layers\..*rank.*out of range"),
    ("svd-rank-negative", _svd_rank(-3), r"-3 is out of range"),
    ("pt2-source-in-folder", _pt2_source_in_folder, r"pickle that could run arbitrary code.*--trust-pickle"),
    # pickles
    ("pt2-use-pickle-profile", _evil_pt2("profile"), r"pickle that could run arbitrary code.*--trust-pickle"),
    ("pt2-use-pickle-export", _evil_pt2("export"), r"pickle that could run arbitrary code.*--trust-pickle"),
    ("pt2-pickled-sample-inputs", _evil_pt2_sample_inputs, r"sample inputs hold pickled objects"),
    # user modules and data
    ("module-raises-at-import", _module("sksec_boom", "raise RuntimeError('boom at import')\n"),
     r"importing 'sksec_boom' .* failed: RuntimeError: boom at import"),
    ("module-syntax-error", _module("sksec_syntax", "def net(:\n"), r"importing 'sksec_syntax' .* failed: SyntaxError"),
    ("module-not-found", lambda tmp, b: _profile("sksec_nowhere:net"),
     r"no module named 'sksec_nowhere' in the current folder"),
    ("factory-raises", _module("sksec_factory", "def net():\n    raise ValueError('bad factory')\n"),
     r"calling sksec_factory:net\(\) failed: ValueError: bad factory"),
    ("data-function-raises", _module("sksec_data", "def load():\n    raise KeyError('nope')\n", data=True),
     r"calling sksec_data:load\(\) failed: KeyError"),
    ("npz-string-x", _npz(_string_x), r"array 'x' has dtype <U1; data must be numeric"),
    ("npz-huge-header", _npz(lambda tmp, b: b.npz_with_huge_header(tmp / "d.npz")), r"more than the file holds"),
    ("weights-bool", _weights(torch.bool), r"wrong kind of values.*torch\.bool into torch\.float32"),
    ("weights-complex", _weights(torch.complex64), r"wrong kind of values"),
    ("weights-int64", _weights(torch.int64), r"wrong kind of values"),
    ("hf-invalid-config", _hf("{not json"), r"config\.json is not valid JSON"),
    ("hf-no-weights", _hf(json.dumps({"model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1,
                                      "num_attention_heads": 2, "intermediate_size": 8})), r"has no weights"),
    ("hf-remote-code", _hf(json.dumps({"model_type": "x", "auto_map": {"AutoModel": "m.M"}})), r"never runs"),
    # recipes
    ("labels-out-of-range", _recipe(FINETUNE, labels=[100, 1, 2, 3] * 5), r"labels range .*outputs 10 classes"),
    ("labels-negative", _recipe(FINETUNE, labels=[-1, 1, 2, 3] * 5), r"negative labels"),
    ("labels-float", _recipe(FINETUNE, labels=[0.5, 1, 2, 3] * 5), r"non-integer"),
    ("include-number", _recipe("stages:\n  - prune: {method: channels, ratio: 0.5, include: 5}\n"),
     r"stages\[0\]\.prune\.include: must be a glob"),
    ("include-nomatch", _recipe("stages:\n  - prune: {method: channels, ratio: 0.5, include: 'nomatch*'}\n"),
     r"stages\[0\]\.prune: include pattern 'nomatch\*' matches no module"),
    ("seed-huge", _recipe("seed: 1180591620717411303424\n"), r"seed: Input should be less than or equal to 4294967295"),
    ("batch-sizes-huge", _recipe("target: {batch_sizes: [100000000]}\n"), r"target\.batch_sizes: each batch size"),
    ("batch-sizes-zero", _recipe("target: {batch_sizes: [0]}\n"), r"target\.batch_sizes: each batch size"),
    ("threads-huge", _recipe("target: {threads: 100000}\n"), r"target\.threads: at most \d+ threads"),
    ("distill-unknown", _recipe("stages:\n  - finetune: {distill: {method: nope}}\n"),
     r"stages\[0\]\.finetune\.distill\.method: unknown method 'nope'"),
    ("distill-temperature", _recipe("stages:\n  - finetune: {distill: {method: kd, temperature: -1}}\n"),
     r"stages\[0\]\.finetune\.distill\.temperature"),
    ("recipe-non-utf8", _recipe(b"seed: 1\nmodel: \xff\xfe\n"), r"is not UTF-8 text"),
    ("recipe-duplicate-key", _recipe("seed: 1\nseed: 2\n"), r"key 'seed' appears twice"),
]  # fmt: skip


def _snapshot(root: Path) -> dict[str, tuple[int, float]]:
    return {
        str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime)
        for p in root.rglob("*")
        if "__pycache__" not in p.parts
    }


@pytest.mark.parametrize(("case", "make", "pattern"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_one_line_and_exit_2(tmp_path, monkeypatch, capsys, build, case, make, pattern):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SLIMKIT_ALLOW_MODULES", raising=False)
    argv = make(tmp_path, build)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(argv)
    captured = capsys.readouterr()
    text = " ".join(captured.err.split())
    assert exited.value.code == 2, captured.err
    assert "Traceback" not in captured.err + captured.out
    assert text.startswith("error: ") and len(captured.err.strip().splitlines()) <= 3, (
        captured.err
    )  # one (wrapped) line
    import re

    assert re.search(pattern, text), text
    assert not (tmp_path / "PWNED").exists(), "a pickle ran code"
    assert _snapshot(tmp_path) == before, "a bad input left something written"


# --- the cases that would kill or hang the test process if the check failed --------------------

KILLERS = [
    ("sys:exit", r"would import module 'sys'"),
    ("os:abort", r"would import module 'os'"),
    ("builtins:input", r"would import module 'builtins'"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("source", "pattern"), KILLERS, ids=[k[0] for k in KILLERS])
def test_saved_source_that_would_exit_abort_or_hang_is_refused(tmp_path, build, source, pattern):
    folder = build.edit(build.saved(tmp_path), lambda i: i.update(source=source))
    env = {k: v for k, v in os.environ.items() if k != "SLIMKIT_ALLOW_MODULES"}
    result = subprocess.run(
        [sys.executable, "-m", "slimkit", "profile", str(folder), "--batch-sizes", "1"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    import re

    assert re.search(pattern, " ".join(result.stderr.split())), result.stderr
