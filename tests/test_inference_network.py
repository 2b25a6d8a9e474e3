"""The prediction copy of a network (batch norms folded, channels-last weights): same
outputs as the network on every architecture and site, the network itself untouched, one
copy shared while the weights are unchanged and a new one after they change."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import napari_fbrs as nf
from napari_fbrs.core.clicks import Click, clicks_to_points
from napari_fbrs.core.models.inference import fold_batch_norms, inference_network
from napari_fbrs.core.models.registry import ARCHITECTURES, build_model


def _randomise_norms(net: torch.nn.Module) -> None:
    """Norm statistics and affine terms away from identity, so that folding matters."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(1 + 0.2 * torch.randn(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))


def _net(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_model(arch)
    _randomise_norms(net)
    return net.eval().requires_grad_(False)


def _inputs(net, size=(64, 72)):
    g = torch.Generator().manual_seed(1)
    image = torch.randn(2, 3, *size, generator=g)
    clicks = [Click(20, 30, True), Click(50, 10, False)]
    points = clicks_to_points([clicks, clicks], with_index=net.uses_prev_mask)
    prev = torch.rand(2, 1, *size, generator=g) if net.uses_prev_mask else None
    return image, points, prev


@pytest.mark.parametrize("arch", [a for a in ARCHITECTURES if a != "tiny_test"])
def test_the_copy_gives_the_networks_outputs_and_leaves_it_unchanged(arch):
    net = _net(arch)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    n_norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    fast = inference_network(net)
    assert fast is not net
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules()) < n_norms
    image, points, prev = _inputs(net)
    with torch.no_grad():
        maps = net.encode_clicks(image, points, prev)
        full = net.logits_from_maps(image, maps)
        torch.testing.assert_close(fast.logits_from_maps(image, maps), full, rtol=1e-4, atol=1e-4)
        for site in sorted(set(net.brs_sites.values())):
            feats, ctx = net.site_features(site, image, maps)
            fast_feats, fast_ctx = fast.site_features(site, image, maps)
            torch.testing.assert_close(fast_feats, feats, rtol=1e-4, atol=1e-4)
            scaled = 1.1 * feats + 0.05
            torch.testing.assert_close(
                fast.logits_from_site(site, 1.1 * fast_feats + 0.05, fast_ctx),
                net.logits_from_site(site, scaled, ctx),
                rtol=1e-4,
                atol=1e-4,
            )
    after = net.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert n_norms == sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())


def test_gradients_reach_the_site_variables_through_the_copy():
    net = _net("fbrs_lite")
    fast = inference_network(net)
    image, points, prev = _inputs(net)
    with torch.inference_mode():  # as the predictor's NoBRS pass: the copy stays usable
        maps = fast.encode_clicks(image, points, prev)
        inference_network(net)
    maps = maps.clone()
    feats, ctx = fast.site_features("B", image, maps)
    scale = torch.zeros(1, feats.shape[1], 1, 1, requires_grad=True)
    fast.logits_from_site("B", feats * (1 + scale), ctx).sum().backward()
    assert scale.grad is not None and float(scale.grad.abs().sum()) > 0
    assert all(p.grad is None for p in fast.parameters())


def test_one_copy_while_the_weights_are_unchanged_and_a_new_one_after():
    net = _net("fbrs_lite")
    first = inference_network(net)
    assert inference_network(net) is first
    image, points, prev = _inputs(net)
    with torch.no_grad():
        old = first.logits_from_maps(image, first.encode_clicks(image, points, prev))
        net.classifier.bias.add_(3.0)  # an in-place change, as an optimiser step makes
    second = inference_network(net)
    assert second is not first
    with torch.no_grad():
        new = second.logits_from_maps(image, second.encode_clicks(image, points, prev))
    torch.testing.assert_close(new, old + 3.0, rtol=1e-4, atol=1e-4)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(state)  # copies in place: the values are the same, the copy is new
    assert inference_network(net) is not second
    # a network in training mode uses batch statistics: it is used as it is
    net.train()
    assert inference_network(net) is net


def test_folding_handles_biases_and_leaves_other_norms():
    seq = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1, bias=True),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.BatchNorm2d(4),  # after a ReLU: not foldable
    )
    _randomise_norms(seq)
    seq.eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        expected = seq(x)
        assert fold_batch_norms(seq) == 1
        assert isinstance(seq[1], torch.nn.Identity) and isinstance(seq[3], torch.nn.BatchNorm2d)
        torch.testing.assert_close(seq(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["NoBRS", "f-BRS-B", "DistMap-BRS"])
def test_predictions_are_those_of_the_network(mode):
    """The predictor runs the copy; its maps are those of the network run as it is
    (``inference_copy=False``, which calls the network's own methods)."""
    net = _net("fbrs_lite")
    image = np.random.default_rng(0).integers(0, 255, (90, 110, 3), dtype=np.uint8)
    clicks = [(40, 50, True), (20, 20, False), (60, 70, True)]
    calls = []
    original = net.encode_clicks

    def spy(*args):
        calls.append(1)
        return original(*args)

    def run(**kwargs):
        p = nf.Predictor(net, mode=mode, device="cpu", zoom_in=None, **kwargs)
        p.set_image(image)
        return [p.add_click(y, x, positive) for y, x, positive in clicks]

    inference_network(net)  # the copy, made before the spy
    net.encode_clicks = spy
    try:
        fast = run()
        assert not calls  # the network's own methods were not used
        plain = run(inference_copy=False)
        assert calls
    finally:
        del net.encode_clicks
    for a, b in zip(fast, plain, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_a_network_made_under_inference_mode_or_one_that_cannot_be_copied():
    with torch.inference_mode():
        net = _net("fbrs_lite")
    fast = inference_network(net)
    assert fast is not net and inference_network(net) is fast
    image = np.random.default_rng(0).integers(0, 255, (90, 110, 3), dtype=np.uint8)
    p = nf.Predictor(net, mode="f-BRS-B", device="cpu", zoom_in=None)  # backpropagates
    p.set_image(image)
    p.add_click(40, 50)
    assert p.add_click(20, 20, positive=False).shape == (90, 110)

    class Uncopyable(type(net)):
        def __deepcopy__(self, memo):
            raise TypeError("cannot be copied")

    odd = _net("fbrs_lite")
    odd.__class__ = Uncopyable
    assert inference_network(odd) is odd  # used as it is
    p = nf.Predictor(odd, mode="NoBRS", device="cpu", zoom_in=None)
    p.set_image(image)
    assert p.add_click(40, 50).shape == (90, 110)
