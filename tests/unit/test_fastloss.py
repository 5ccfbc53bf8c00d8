"""FastRNNTLoss must equal NeMo's own RNNT loss (warprnnt_numba on CPU) in value and gradient."""

from __future__ import annotations

import pytest
import torch

from components.finetune_asr.fastloss import FastRNNTLoss, patch_rnnt_loss

nemo_rnnt = pytest.importorskip("nemo.collections.asr.losses.rnnt")


def _case(B: int, T: int, U: int, V: int, seed: int, full: bool = False):
    g = torch.Generator().manual_seed(seed)
    acts = torch.randn(B, T, U + 1, V + 1, generator=g) * 3.0
    labels = torch.randint(0, V, (B, U), generator=g)
    if full:
        act_lens = torch.full((B,), T, dtype=torch.long)
        label_lens = torch.full((B,), U, dtype=torch.long)
    else:
        act_lens = torch.randint(max(1, T // 2), T + 1, (B,), generator=g)
        act_lens[0] = T  # the wrapper expects the longest sample to fill T
        label_lens = torch.randint(0, U + 1, (B,), generator=g)
        label_lens[-1] = U
    return acts, labels, act_lens, label_lens


def _loss_and_grad(inner: torch.nn.Module, V: int, acts, labels, act_lens, label_lens):
    wrapper = nemo_rnnt.RNNTLoss(num_classes=V, reduction=None, loss_name="default")
    if inner is not None:
        wrapper._loss = inner
    x = acts.clone().requires_grad_(True)
    losses = wrapper(log_probs=x, targets=labels, input_lengths=act_lens, target_lengths=label_lens)
    # A non-uniform weighting checks every sample's gradient, not only their sum.
    weights = torch.arange(1, losses.numel() + 1, dtype=losses.dtype)
    (losses * weights).sum().backward()
    return losses.detach(), x.grad


@pytest.mark.parametrize(
    "B,T,U,V,full",
    [(1, 1, 0, 3, True), (1, 5, 3, 4, True), (3, 7, 4, 6, False), (4, 12, 6, 20, False), (2, 3, 8, 5, True)],
)
def test_matches_nemo_loss_and_gradient(B, T, U, V, full):
    acts, labels, act_lens, label_lens = _case(B, T, U, V, seed=B * 100 + T, full=full)
    ref_loss, ref_grad = _loss_and_grad(None, V, acts, labels, act_lens, label_lens)
    fast_loss, fast_grad = _loss_and_grad(FastRNNTLoss(blank=V), V, acts, labels, act_lens, label_lens)
    assert fast_loss.shape == ref_loss.shape == (B,)
    torch.testing.assert_close(fast_loss, ref_loss, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast_grad, ref_grad, rtol=1e-4, atol=2e-5)
    assert torch.isfinite(fast_grad).all()


def test_reductions_match_nemo_semantics():
    acts, labels, act_lens, label_lens = _case(3, 6, 4, 5, seed=7)
    per = FastRNNTLoss(blank=5)(acts, labels, act_lens, label_lens)
    assert torch.allclose(FastRNNTLoss(5, "sum")(acts, labels, act_lens, label_lens), per.sum())
    assert torch.allclose(FastRNNTLoss(5, "mean_batch")(acts, labels, act_lens, label_lens), per.mean())
    with pytest.raises(ValueError, match="unknown reduction"):
        FastRNNTLoss(5, "median")(acts, labels, act_lens, label_lens)


def test_patch_replaces_inner_loss_on_cpu_and_rejects_non_rnnt_models():
    model = torch.nn.Module()
    model.loss = nemo_rnnt.RNNTLoss(num_classes=9, reduction="mean_batch", loss_name="default")
    assert patch_rnnt_loss(model) is True
    assert isinstance(model.loss._loss, FastRNNTLoss) and model.loss._loss.blank == 9
    with pytest.raises(TypeError, match="no NeMo RNNTLoss"):
        patch_rnnt_loss(torch.nn.Linear(2, 2))
