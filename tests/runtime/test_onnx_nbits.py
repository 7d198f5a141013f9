"""Weight-only layers exported as onnxruntime's MatMulNBits / GatherBlockQuantized."""

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

import slimkit as sk
from slimkit.core.errors import InvalidConfigError
from slimkit.core.lowering import export_standins
from slimkit.core.samples import example_batch
from slimkit.measure import sqnr_db
from slimkit.models.testing import ZOO
from slimkit.quantization.modules import WeightOnlyEmbedding, WeightOnlyLinear
from slimkit.quantization.onnx_lowering import NBitsEmbedding, NBitsLinear, block_size, export_bits
from slimkit.runtime import load

pytestmark = pytest.mark.slow  # integration: exports through onnxruntime/torch.export (make test)

MIN_SQNR_DB = 40.0


class MLP(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 128))

    def example_inputs(self):
        return (torch.randn(2, 256, generator=torch.Generator().manual_seed(0)),)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return MLP().eval()


@pytest.fixture(scope="module")
def fp32_mlp_bytes(tmp_path_factory):
    return sk.export(_mlp(), tmp_path_factory.mktemp("fp32") / "mlp.onnx").stat().st_size


def _export(model, tmp_path, **options):
    """Export (verified at 40 dB against the quantized model), check once more in onnxruntime."""
    path = sk.export(model, tmp_path / "model.onnx", min_sqnr_db=MIN_SQNR_DB, **options)
    x = example_batch(model, None, None).args[0]
    with torch.no_grad():
        assert sqnr_db(model(x), load(path).run(x)) >= MIN_SQNR_DB
    return path, onnx.load(path)


def _nodes(proto, op_type):
    return [n for n in proto.graph.node if n.op_type == op_type]


def _attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _float_initializer_sizes(proto):
    return [int(np.prod(i.dims)) for i in proto.graph.initializer if i.data_type == onnx.TensorProto.FLOAT]


@pytest.mark.parametrize("group_size", [32, 128])
def test_mlp_linears_become_matmulnbits(tmp_path, fp32_mlp_bytes, group_size):
    q = sk.quantize(_mlp(), "weight-only", bits=4, group_size=group_size)
    path, proto = _export(q, tmp_path)
    nodes = _nodes(proto, "MatMulNBits")
    assert len(nodes) == 2 and all(n.domain == "com.microsoft" for n in nodes)
    assert not _nodes(proto, "Gemm") and not _nodes(proto, "MatMul")
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    first = _attrs(nodes[0])
    assert (first["K"], first["N"], first["bits"], first["block_size"]) == (256, 512, 4, group_size)
    n_blocks = 256 // group_size
    b, scales, zeros, bias = (inits[name] for name in (*nodes[0].input[1:4], nodes[0].input[5]))
    assert b.dtype == np.uint8 and b.shape == (512, n_blocks, group_size // 2)
    assert np.array_equal(b.reshape(512, -1), q[0].packed.qweight.numpy())  # slimkit's storage, as it is
    assert scales.shape == (512 * n_blocks,) and zeros.shape == (512 * -(-n_blocks // 2),) and bias.shape == (512,)
    assert max(_float_initializer_sizes(proto)) < 128 * 512  # no float copy of any weight
    assert path.stat().st_size <= 0.2 * fp32_mlp_bytes


def test_eight_and_two_bit_layers_keep_their_width(tmp_path):
    two_bit = {"2": {"method": "weight-only", "bits": 2, "group_size": 16}}
    q = sk.quantize(_mlp(), "weight-only", bits=8, group_size=64, overrides=two_bit)
    _, proto = _export(q, tmp_path)
    assert [_attrs(n)["bits"] for n in _nodes(proto, "MatMulNBits")] == [8, 2]


def test_attention_block_linears_become_matmulnbits(tmp_path):
    q = sk.quantize(ZOO["attention"](), "weight-only", bits=4, group_size=128)  # 128 > dim: block 32
    _, proto = _export(q, tmp_path)
    nodes = _nodes(proto, "MatMulNBits")
    assert len(nodes) == 8 and {_attrs(n)["block_size"] for n in nodes} == {32, 64}
    assert not _nodes(proto, "Gemm") and len(_nodes(proto, "MatMul")) == 2  # the two attention products


def test_embedding_becomes_gather_block_quantized(tmp_path):
    q = sk.quantize(ZOO["embedding"](), "weight-only", bits=4, group_size=32)
    _, proto = _export(q, tmp_path)
    (gather,) = _nodes(proto, "GatherBlockQuantized")
    assert _attrs(gather)["bits"] == 4 and len(_nodes(proto, "MatMulNBits")) == 2
    assert max(_float_initializer_sizes(proto)) < 100 * 16  # the table is not stored as floats


@pytest.mark.parametrize(("bits", "group_size", "matmul_nbits"), [(4, 24, 0), (3, 128, 2)])
def test_layers_without_a_native_form_export_correctly(tmp_path, fp32_mlp_bytes, bits, group_size, matmul_nbits):
    q = sk.quantize(_mlp(), "weight-only", bits=bits, group_size=group_size)
    path, proto = _export(q, tmp_path)
    nodes = _nodes(proto, "MatMulNBits")
    assert len(nodes) == matmul_nbits and all(_attrs(n)["bits"] == 8 for n in nodes)  # 3-bit codes widened
    assert max(_float_initializer_sizes(proto)) < 128 * 512  # codes one per byte, not floats
    assert path.stat().st_size <= 0.4 * fp32_mlp_bytes


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group_size", [16, 48, 128, None])
def test_standins_compute_what_the_layers_compute(bits, group_size):
    torch.manual_seed(0)
    linear = WeightOnlyLinear.from_float(nn.Linear(100, 24), bits, group_size)
    embedding = WeightOnlyEmbedding.from_float(nn.Embedding(30, 40), bits, group_size)
    x, ids = torch.randn(3, 5, 100), torch.randint(0, 30, (3, 5))
    with torch.no_grad():
        if (block := block_size(linear.packed.group_size, 100)) is not None:
            torch.testing.assert_close(NBitsLinear(linear, export_bits(bits), block)(x), linear(x))
        if (block := block_size(embedding.packed.group_size, 40)) is not None:
            torch.testing.assert_close(NBitsEmbedding(embedding, export_bits(bits), block)(ids), embedding(ids))


def test_block_size_rules():
    assert block_size(128, 384) == 128 and block_size(384, 384) == 128 and block_size(1024, 1024) == 256
    assert block_size(128, 20) == 32 and block_size(24, 100) is None and block_size(8, 64) is None


def test_model_is_restored_even_when_export_fails():
    q = sk.quantize(_mlp(), "weight-only", bits=4, group_size=32)
    with pytest.raises(RuntimeError), export_standins(q, "onnx") as swapped:
        assert set(swapped) == {"0", "2"} and isinstance(q[0], NBitsLinear)
        raise RuntimeError("exporter failed")
    assert isinstance(q[0], WeightOnlyLinear) and isinstance(q[2], WeightOnlyLinear)


def test_accuracy_level_option(tmp_path):
    q = sk.quantize(_mlp(), "weight-only", bits=4, group_size=32)
    path = sk.export(q, tmp_path / "m.onnx", accuracy_level=4)  # int8 activations: checked at the default floor
    assert {_attrs(n)["accuracy_level"] for n in _nodes(onnx.load(path), "MatMulNBits")} == {4}
    with pytest.raises(InvalidConfigError, match="accuracy_level"):
        sk.export(q, tmp_path / "bad.onnx", accuracy_level=7)
