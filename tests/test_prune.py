"""Pruning methods on the digits model, checked on the PyTorch side (no conversion)."""

import copy

import numpy as np
import onnx
import pytest
import torch
from onnx.reference import ReferenceEvaluator

from edgeprune.front import prune as P
from edgeprune.front.channel_prune import channel_masks, module_channel_groups
from edgeprune.front.channels import remove_dead_channels
from edgeprune.front.convert import export_onnx
from edgeprune.front.finetune import reestimate_batchnorm
from edgeprune.front.load import LoadedModel


@pytest.fixture
def model(digits_cnn):
    return copy.deepcopy(digits_cnn[0]).eval()


def weight_sparsity(module) -> float:
    layers = P.prunable_layers(module)
    params = dict(module.named_parameters())
    zeros = sum(int((params[l.name] == 0).sum()) for l in layers)
    return zeros / sum(l.size for l in layers)


@pytest.mark.parametrize("scope", ["global", "layer", "erk"])
@pytest.mark.parametrize("keep_first_last", [False, True])
@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9])
def test_magnitude_reaches_target_sparsity(model, scope, keep_first_last, sparsity):
    layers = P.prunable_layers(model)
    dense = {layers[0].name, layers[-1].name} if keep_first_last else set()
    P.apply_masks(model, P.magnitude_masks(model, sparsity, scope, dense))
    assert abs(weight_sparsity(model) - sparsity) < 0.005
    params = dict(model.named_parameters())
    for name in dense:
        assert torch.count_nonzero(params[name]) == params[name].numel()


def test_erk_gives_large_layers_more_sparsity(model):
    masks = P.magnitude_masks(model, 0.8, "erk")
    density = {k: float(m.float().mean()) for k, m in masks.items()}
    assert density["features.6.weight"] < density["features.0.weight"]


def test_nm_keeps_at_most_n_of_every_m_input_weights(model):
    masks, skipped = P.nm_masks(model, 2, 4)
    P.apply_masks(model, masks)
    assert skipped == ["features.0.weight"]  # one input channel: no group of 4
    for name, p in model.named_parameters():
        if name in masks and name not in skipped:
            w = p.detach().movedim(1, -1) if p.dim() == 4 else p.detach()
            assert int((w.reshape(-1, 4) != 0).sum(1).max()) <= 2


def test_gmp_schedule_is_cubic_from_zero_to_final():
    values = [P.gmp_sparsity(t, 10, 0.9) for t in range(11)]
    assert values[0] == 0.0 and values[-1] == pytest.approx(0.9)
    assert all(b > a for a, b in zip(values, values[1:]))
    assert values[5] == pytest.approx(0.9 - 0.9 * 0.5**3)


@pytest.mark.parametrize("form", ["module", "scripted"])
def test_batchnorm_reestimation_recovers_exact_statistics(model, form):
    x = np.random.default_rng(0).random((300, 1, 8, 8), dtype=np.float32)
    m = torch.jit.script(copy.deepcopy(model)) if form == "scripted" else copy.deepcopy(model)
    assert reestimate_batchnorm(m, x) == 3
    # Expected: each BatchNorm's batch statistics over all samples, in training mode.
    reference = copy.deepcopy(model).train()
    for bn in (reference.features[1], reference.features[4], reference.features[7]):
        bn.momentum = None
        bn.reset_running_stats()
    with torch.no_grad():
        reference(torch.from_numpy(x))
    for i in (1, 4, 7):
        torch.testing.assert_close(m.features[i].running_mean, reference.features[i].running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(m.features[i].running_var, reference.features[i].running_var, rtol=1e-5, atol=1e-6)


def test_batchnorm_reestimation_leaves_frozen_traced_models_alone(model):
    traced = torch.jit.trace(copy.deepcopy(model), torch.zeros(2, 1, 8, 8))
    bn = getattr(traced.features, "1")
    before = bn.running_var.clone()
    assert reestimate_batchnorm(traced, np.random.default_rng(0).random((20, 1, 8, 8), dtype=np.float32)) == 0
    torch.testing.assert_close(bn.running_var, before)


@pytest.mark.parametrize("sparsity", [0.0, 0.001, 0.01])
def test_erk_handles_near_zero_sparsity(model, sparsity):
    masks = P.magnitude_masks(model, sparsity, "erk")
    assert P.mask_sparsity(masks) <= sparsity + 0.005


def test_channel_pruning_zeroes_whole_channels_and_their_batchnorm(model):
    groups = module_channel_groups(model, (1, 8, 8))
    assert [g.weight for g in groups] == ["features.0.weight", "features.3.weight", "features.6.weight"]
    masks, removed = channel_masks(model, groups, 0.5)
    assert removed == {"features.0.weight": 8, "features.3.weight": 16, "features.6.weight": 16}
    P.apply_masks(model, masks)
    bn = model.features[1]
    dead = (model.features[0].weight.reshape(16, -1) == 0).all(1)
    assert int(dead.sum()) == 8
    assert torch.all(bn.weight[dead] == 0) and torch.all(bn.bias[dead] == 0)


def test_dead_channel_removal_shrinks_onnx_without_changing_outputs(model):
    groups = module_channel_groups(model, (1, 8, 8))
    masks, _ = channel_masks(model, groups, 0.5)
    P.apply_masks(model, masks)
    proto = export_onnx(LoadedModel(None, "module", module=model), (1, 8, 8))
    smaller, removed = remove_dead_channels(proto)
    assert sum(removed.values()) == 40
    assert smaller.ByteSize() < proto.ByteSize() * 0.4
    onnx.checker.check_model(smaller)
    x = np.random.default_rng(1).random((1, 1, 8, 8), dtype=np.float32)
    before = ReferenceEvaluator(proto).run(None, {"input": x})[0]
    after = ReferenceEvaluator(smaller).run(None, {"input": x})[0]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)


def test_channels_feeding_the_output_are_never_pruned(model):
    groups = module_channel_groups(model, (1, 8, 8))
    assert "classifier.weight" not in {g.weight for g in groups}


class _LinearOnLastAxis(torch.nn.Module):
    """Conv -> ReLU -> Linear over W (a 4-D MatMul), then mean over the last axis: no channel flow."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x))).mean(-1).flatten(1)


class _DepthwiseAndBatchNorm1d(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.fc1 = torch.nn.Linear(8 * 8 * 8, 6)
        self.bn = torch.nn.BatchNorm1d(6)
        self.fc2 = torch.nn.Linear(6, 3)

    def forward(self, x):
        h = torch.relu(self.dw(torch.relu(self.conv(x))))
        return self.fc2(torch.relu(self.bn(self.fc1(h.flatten(1)))))


@pytest.mark.parametrize("cls", [_LinearOnLastAxis, _DepthwiseAndBatchNorm1d])
def test_channel_pruning_is_exact_on_other_graph_shapes(cls):
    torch.manual_seed(0)
    module = cls().eval()
    groups = module_channel_groups(module, (1, 8, 8))
    masks, _ = channel_masks(module, groups, 0.5)
    P.apply_masks(module, masks)
    proto = export_onnx(LoadedModel(None, "module", module=module), (1, 8, 8))
    smaller, removed = remove_dead_channels(proto)
    onnx.checker.check_model(smaller)
    x = np.random.default_rng(1).random((1, 1, 8, 8), dtype=np.float32)
    before = ReferenceEvaluator(proto).run(None, {"input": x})[0]
    after = ReferenceEvaluator(smaller).run(None, {"input": x})[0]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)
    if cls is _LinearOnLastAxis:
        assert groups == [] and removed == {}
    else:
        assert sum(removed.values()) > 0


def test_block_pruning_zeroes_whole_1x4_input_channel_blocks(model):
    masks, skipped = P.block_masks(model, 0.8)
    P.apply_masks(model, masks)
    assert skipped == ["features.0.weight"]  # one input channel: no block of 4
    weights = [l for l in P.prunable_layers(model)]
    total = sum(l.size for l in weights)
    zeros = sum(int((P.parameters_by_name(model)[l.name] == 0).sum()) for l in weights)
    assert abs(zeros / total - 0.8) < 0.01
    for l in weights:
        if l.name in skipped:
            continue
        w = P.parameters_by_name(model)[l.name].detach()
        blocks = (w.movedim(1, -1) if w.dim() == 4 else w).reshape(-1, 4)
        nonzero = (blocks != 0).sum(dim=1)
        assert set(nonzero.tolist()) <= {0, 4}, f"{l.name}: a block is partly pruned"
    # The kernels' block4 encoder takes exactly these blocks (TFLite layout: input channels last).
    from edgeprune.sparse import encode

    fc = P.parameters_by_name(model)["classifier.weight"].detach().numpy()
    q = np.clip(np.rint(fc / np.abs(fc).max() * 127), -127, 127).astype(np.int8)
    enc = encode("block4", q, None, 0, "fc")
    assert enc.stored_values == int((q.reshape(-1, 4) != 0).any(axis=1).sum()) * 4
