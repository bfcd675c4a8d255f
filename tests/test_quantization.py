"""Weight-only quantisation: torchao's int8 built from row blocks, the CPU kernel path, bytes, refusals."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unimedvl.checkpoint.memory_estimate import stored_bytes
from unimedvl.checkpoint.quantization import (
    Int8Linear,
    Int8RowQuantizer,
    check_quantization,
    is_quantized_linear,
    quantize_linear,
    quantized_weight_bytes,
)
from unimedvl.errors import ConfigError


def _linear(dtype, out_features=96, in_features=64):
    torch.manual_seed(0)
    return nn.Linear(in_features, out_features, bias=True, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_int8_from_row_blocks_is_torchaos_int8_weight_only_of_the_whole_matrix(dtype, monkeypatch):
    from torchao.quantization import Int8Tensor, Int8WeightOnlyConfig, quantize_

    from unimedvl.checkpoint import quantization

    monkeypatch.setattr(quantization, "QUANTIZE_BLOCK_ELEMENTS", 64 * 7)  # 7-row workspace blocks
    reference = _linear(dtype)
    with torch.no_grad():
        reference.weight[3] = 0.0  # an all-zero row: the scale's clamp at eps
    weight = reference.weight.detach().clone()
    quantize_(reference, Int8WeightOnlyConfig(set_inductor_config=False))
    blocks = Int8RowQuantizer(tuple(weight.shape), weight.dtype, weight.device)
    for start in range(0, 96, 40):  # uneven blocks
        blocks.add(weight[start : start + 40])
    ours = blocks.finish()
    assert isinstance(ours, Int8Tensor) and ours.dtype == dtype
    assert torch.equal(ours.qdata, reference.weight.qdata) and torch.equal(ours.scale, reference.weight.scale)
    assert torch.equal(ours.zero_point, reference.weight.zero_point)
    x = torch.randn(3, 5, 64, dtype=dtype)
    assert torch.equal(F.linear(x, ours, reference.bias), reference(x))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_int8_linear_stays_close_to_the_float_layer(dtype):
    float_layer = _linear(dtype)
    x = torch.randn(2, 7, 64, dtype=dtype)
    expected = float_layer(x)
    quantized = quantize_linear(float_layer, "int8", dtype)
    assert isinstance(quantized, Int8Linear) and quantize_linear(quantized, "int8", dtype) is quantized
    y = quantized(x)
    assert y.dtype == dtype and y.shape == expected.shape
    error = ((y.float() - expected.float()).norm() / expected.float().norm()).item()
    assert 0 < error < 0.02


def test_the_cpu_bf16_kernel_path_matches_torchaos_own_matmul():
    layer = quantize_linear(_linear(torch.bfloat16), "int8", torch.bfloat16)
    x = torch.randn(4, 64, dtype=torch.bfloat16)
    fused = layer(x)  # torch._weight_int8pack_mm
    dispatched = F.linear(x.float(), layer.weight.dequantize(torch.float32), layer.bias.float())
    assert torch.allclose(fused.float(), dispatched, rtol=0.02, atol=0.02)


def test_quantised_bytes_are_what_the_tensor_stores():
    layer = quantize_linear(_linear(torch.bfloat16, 300, 128), "int8", torch.bfloat16)
    assert stored_bytes(layer.weight) == quantized_weight_bytes(300, 128, "int8") == 300 * 128 + 5 * 300
    assert quantized_weight_bytes(300, 128, "nf4") == 300 * 128 // 2 + 600 + 4 * 3


def test_which_layers_are_quantised():
    assert is_quantized_linear("language_model.model.layers.3.mlp.down_proj")
    assert is_quantized_linear("language_model.lm_head")
    assert is_quantized_linear("vit_model.vision_model.encoder.layers.0.mlp.fc1")
    for name in (
        "connector.fc1",
        "vae2llm",
        "llm2vae",
        "time_embedder.mlp.0",
        "vit_model.vision_model.embeddings.patch_embedding",
    ):
        assert not is_quantized_linear(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_nf4_is_refused_on_a_cpu_in_one_line():
    with pytest.raises(ConfigError) as err:
        check_quantization("nf4", torch.device("cpu"))
    assert "\n" not in str(err.value) and "CUDA" in str(err.value) and "int8" in str(err.value)
    check_quantization("int8", torch.device("cpu"))  # torchao is installed: no error
    with pytest.raises(ConfigError, match="choose none, int8 or nf4"):
        check_quantization("int4", torch.device("cpu"))
