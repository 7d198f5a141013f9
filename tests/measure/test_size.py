import warnings

import pytest
import torch
from torch import nn

from slimkit.core.errors import InvalidConfigError, SlimkitError
from slimkit.measure import artifact_bytes, tensor_bytes


def test_file_size(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"x" * 1234)
    assert artifact_bytes(path) == 1234
    assert artifact_bytes(str(path)) == 1234


def test_directory_sums_files_recursively(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"1" * 100)
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "sub" / "b.json").write_bytes(b"2" * 20)
    (tmp_path / "sub" / "deeper" / "c").write_bytes(b"3" * 7)
    (tmp_path / "empty").mkdir()
    assert artifact_bytes(tmp_path) == 127


def test_missing_path_is_a_clear_slimkit_error(tmp_path):
    missing = tmp_path / "nope.onnx"
    with pytest.raises(InvalidConfigError, match="nope.onnx' does not exist") as info:
        artifact_bytes(missing)
    assert isinstance(info.value, SlimkitError)
    assert not isinstance(info.value, FileNotFoundError)


def test_tensor_bytes_counts_parameters_and_buffers_by_dtype():
    model = nn.Sequential(nn.Linear(10, 4), nn.BatchNorm1d(4)).to(torch.float64)
    model[1].register_buffer("codes", torch.zeros(9, dtype=torch.int8))
    # Linear 44 + BN affine 8 + running mean/var 8 params at 8 bytes; num_batches_tracked int64; 9 int8
    assert tensor_bytes(model) == (44 + 8 + 8) * 8 + 8 + 9


def test_tensor_bytes_counts_shared_tensors_once():
    layer = nn.Linear(6, 6)
    assert tensor_bytes(nn.Sequential(layer, layer)) == 42 * 4
    embedding, decoder = nn.Embedding(10, 3), nn.Linear(3, 10, bias=False)
    decoder.weight = embedding.weight
    assert tensor_bytes(nn.ModuleList([embedding, decoder])) == 30 * 4


def test_tensor_bytes_sees_torch_ao_packed_weights():
    model = nn.Sequential(nn.Linear(64, 32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear})
    assert not list(quantized.parameters()) and not list(quantized.buffers())
    # int8 weight + fp32 bias, plus the module's scale (fp32) and zero point (int64)
    assert tensor_bytes(quantized) == 64 * 32 + 32 * 4 + 4 + 8


def test_broken_links_in_a_directory_are_skipped(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"w" * 50)
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    assert artifact_bytes(tmp_path) == 50
