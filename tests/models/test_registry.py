"""The example registry in slimkit.models."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import slimkit.models as models
from slimkit.core.errors import InvalidConfigError


def test_names():
    assert models.list_examples() == ["digits-cnn", "minilm"]
    assert models.list_datasets() == ["digits", "sentences"]
    assert all(models.get_example(name).data in models.list_datasets() for name in models.list_examples())


def test_unknown_example_lists_valid_names():
    with pytest.raises(InvalidConfigError, match="resnet") as info:
        models.get_example("resnet")
    assert "digits-cnn" in str(info.value) and "minilm" in str(info.value)
    with pytest.raises(InvalidConfigError):
        models.get_model("resnet")


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(InvalidConfigError, match="imagenet") as info:
        models.get_data("imagenet")
    assert "digits" in str(info.value) and "sentences" in str(info.value)


def test_get_model_runs_on_its_example_inputs():
    example = models.get_example("example:digits-cnn")
    model = models.get_model("digits-cnn")
    assert not model.training
    with torch.no_grad():
        assert model(*example.example_inputs()).shape == (1, 10)
    untrained = example.build(False)
    assert untrained.state_dict().keys() == model.state_dict().keys()


def test_get_minilm():
    model = models.get_model("minilm")
    with torch.no_grad():
        assert model(*models.get_example("minilm").example_inputs()).shape == (1, 384)


def test_get_data_batch_size():
    assert next(iter(models.get_data("digits").test))[0].shape[0] == 64
    assert next(iter(models.get_data("digits", batch_size=16).test))[0].shape[0] == 16
    sentences = models.get_data("sentences", batch_size=4)
    assert sentences.metric == "fidelity" and next(iter(sentences.test))["input_ids"].shape[0] == 4


def test_import_is_light():
    code = (
        "import sys, slimkit.models\n"
        "heavy = sorted(m for m in ('transformers', 'sklearn', 'sentence_transformers') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    src = str(Path(models.__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
