"""Similarity measures vs OpenCV / straightforward numpy formulas."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from attentionflow.errors import ConfigError
from attentionflow.mmi.similarity import SIMILARITY_METHODS, similarity

H, W = 8, 8
Q = H * W


def _maps(seed: int = 0, lead: tuple[int, ...] = (2, 3), k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    attn = torch.rand(*lead, k, Q, generator=g)  # (..., K, Q)
    motion = torch.rand(*lead, Q, generator=g)  # (..., Q)
    return attn, motion


def _loop(attn: torch.Tensor, motion: torch.Tensor, fn) -> np.ndarray:
    """Apply a per-map numpy reference ``fn(a (Q,), m (Q,)) -> float`` over all leading dims and K."""
    a = attn.numpy()
    m = np.broadcast_to(motion.numpy()[..., None, :], a.shape)
    out = np.zeros(a.shape[:-1])
    for idx in np.ndindex(*a.shape[:-1]):
        out[idx] = fn(a[idx].astype(np.float64), m[idx].astype(np.float64))
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0, None)
    return x / x.max() if x.max() > 0 else x


def test_ncc_matches_opencv_tm_ccoeff_normed():
    attn, motion = _maps(0)

    def ref(a, m):
        r = cv2.matchTemplate(a.reshape(H, W).astype(np.float32), m.reshape(H, W).astype(np.float32),
                              cv2.TM_CCOEFF_NORMED)[0, 0]
        return (r + 1) / 2

    got = similarity(attn, motion, "ncc")
    assert got.shape == (2, 3, 5)
    np.testing.assert_allclose(got.numpy(), _loop(attn, motion, ref), atol=1e-5)


@pytest.mark.parametrize("method", ["ncc", "zncc"])
@pytest.mark.parametrize("motion_lead", [(2, 3), (3,)], ids=["full", "broadcast"])
def test_maps_given_as_the_transposed_view_of_query_major_attention_score_the_same(method, motion_lead):
    """The injector passes (..., Q, K) head averages as a transposed (non-contiguous) view; the scores must be the
    OpenCV-matching ones of the (..., K, Q) layout, degenerate maps included."""
    attn, motion = _maps(4)
    attn[0, 1, 2] = 0.25  # a constant map: Pearson 0
    query_major = attn.transpose(-1, -2).contiguous()  # (2, 3, Q, K), as the attention probabilities are stored
    view = query_major.transpose(-1, -2)  # (2, 3, K, Q) view, not contiguous
    assert not view.is_contiguous()
    m = motion if motion_lead == (2, 3) else motion[0]
    torch.testing.assert_close(similarity(view, m, method), similarity(attn, m, method), atol=1e-6, rtol=0)
    assert float(similarity(view, m, "ncc")[0, 1, 2]) == 0.5


def test_ncc_broadcasts_motion_over_missing_leading_dims():
    attn, motion = _maps(1)
    shared = motion[0]  # (3, Q): same motion for both leading entries
    got = similarity(attn, shared, "ncc")
    expected = similarity(attn, shared.expand(2, 3, Q), "ncc")
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("method", SIMILARITY_METHODS)
def test_degenerate_maps_are_finite(method):
    attn = torch.zeros(2, 4, Q)
    attn[0, 1] = 0.25  # constant non-zero map
    attn[1] = torch.rand(4, Q, generator=torch.Generator().manual_seed(11))
    motion = torch.zeros(2, Q)  # static video: all-zero motion map
    motion[1] = 0.5  # constant motion map
    got = similarity(attn, motion, method)
    assert torch.isfinite(got).all()
    expected_row0 = {"ncc": 0.5, "zncc": 0.0, "cc": 0.0, "ssd": None, "mi": 0.0}[method]
    if expected_row0 is not None:
        assert torch.all(got[0] == expected_row0)
    if method in ("ncc", "zncc", "mi"):  # a constant motion map carries no information
        torch.testing.assert_close(got[1], torch.full((4,), expected_row0), atol=1e-6, rtol=0)
    if method == "ssd":  # zero map vs zero motion: identical after scaling
        assert got[0, 0] == 1.0


@pytest.mark.parametrize("method", ["ncc", "zncc"])
@pytest.mark.parametrize("spread", [0.0, 1e-7, 1e-3, 1e-1], ids=["exact", "rounding", "small", "large"])
@pytest.mark.parametrize("level", [0.25, -0.25], ids=["positive", "negative"])
def test_nearly_constant_maps_score_as_constant_only_below_the_rounding_bound(method, spread, level):
    """A map whose deviations are what rounding leaves of a constant (below ``64 * eps`` of its mean) has rho 0; one
    with real, if small, deviations keeps its correlation (checked in float64 with numpy). Maps of either sign in
    general."""
    gen = torch.Generator().manual_seed(5)
    attn = (level * (1.0 + spread * torch.randn(3, Q, generator=gen, dtype=torch.float64))).float()  # (3, Q)
    motion = torch.rand(Q, generator=gen)
    got = similarity(attn, motion, method)
    if spread < 1e-6:
        expected = np.full(3, 0.5 if method == "ncc" else 0.0)
    else:
        rho = np.array([np.corrcoef(a.double().numpy(), motion.double().numpy())[0, 1] for a in attn])
        assert np.abs(rho).min() > 0.01  # the check below is not about degenerate zeros
        expected = (rho + 1) / 2 if method == "ncc" else np.maximum(rho, 0.0)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-4)


def test_zncc_is_pearson_clipped():
    attn, motion = _maps(2)
    got = similarity(attn, motion, "zncc")
    expected = _loop(attn, motion, lambda a, m: max(np.corrcoef(a, m)[0, 1], 0.0))
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)
    # anti-correlated map scores 0, correlated one 1
    m = motion[0, 0]
    pair = torch.stack([1.0 - m, 2.0 * m + 0.1])[None]  # (1, 2, Q)
    torch.testing.assert_close(similarity(pair, m[None], "zncc"), torch.tensor([[0.0, 1.0]]))


def test_cc_matches_opencv_tm_ccorr_normed():
    attn, motion = _maps(3)

    def ref(a, m):
        return cv2.matchTemplate(a.reshape(H, W).astype(np.float32), m.reshape(H, W).astype(np.float32),
                                 cv2.TM_CCORR_NORMED)[0, 0]

    got = similarity(attn, motion, "cc")
    np.testing.assert_allclose(got.numpy(), _loop(attn, motion, ref), atol=1e-5)


def test_ssd_formula():
    attn, motion = _maps(4)
    got = similarity(attn, motion, "ssd")
    expected = _loop(attn, motion, lambda a, m: 1.0 - np.mean((_unit(a) - _unit(m)) ** 2))
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)


def _nmi(a: np.ndarray, m: np.ndarray, bins: int = 16) -> float:
    joint, _, _ = np.histogram2d(_unit(a).astype(np.float32), _unit(m).astype(np.float32),
                                 bins=bins, range=[[0, 1], [0, 1]])
    p = joint / joint.sum()
    pa, pm = p.sum(1), p.sum(0)

    def ent(x):
        x = x[x > 0]
        return -np.sum(x * np.log(x))

    ha, hm, hj = ent(pa), ent(pm), ent(p.ravel())
    return 0.0 if ha + hm == 0 else 2 * (ha + hm - hj) / (ha + hm)


def test_mi_matches_histogram2d_nmi():
    attn, motion = _maps(5)
    got = similarity(attn, motion, "mi")
    # the torch maps are float32; _unit on float32 reproduces the same bin edges
    a32 = attn.numpy()
    m32 = np.broadcast_to(motion.numpy()[..., None, :], a32.shape)
    expected = np.zeros(a32.shape[:-1])
    for idx in np.ndindex(*a32.shape[:-1]):
        expected[idx] = _nmi(a32[idx], m32[idx])
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)
    assert expected.std() > 0  # the reference is not trivially constant


@pytest.mark.parametrize("method", SIMILARITY_METHODS)
def test_range_and_identity_scores_highest(method):
    g = torch.Generator().manual_seed(6)
    # a blob-shaped motion map and a noisy background
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    blob = torch.exp(-((yy - 3.0) ** 2 + (xx - 5.0) ** 2) / 4.0).reshape(Q)  # (Q,)
    shuffled = blob[torch.randperm(Q, generator=g)]
    noise = torch.rand(Q, generator=g)
    attn = torch.stack([blob, shuffled, noise])[None]  # (1, 3, Q)
    got = similarity(attn, blob[None], method)[0]  # (3,)
    assert torch.all((got >= 0) & (got <= 1))
    assert got[0] > got[1] and got[0] > got[2]
    if method != "ssd":
        assert got[0] == pytest.approx(1.0, abs=1e-5)

    attn_r, motion_r = _maps(7)
    scores = similarity(attn_r, motion_r, method)
    assert torch.all((scores >= 0) & (scores <= 1))


def test_half_precision_keeps_dtype_and_agrees():
    attn, motion = _maps(8)
    got = similarity(attn.half(), motion.half(), "ncc")
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.float(), similarity(attn.half().float(), motion.half().float()),
                               atol=2e-3, rtol=0)


def test_unknown_method_and_shape_errors():
    attn, motion = _maps(9)
    with pytest.raises(ConfigError, match="unknown similarity 'x'; choose from: ncc, zncc, cc, ssd, mi"):
        similarity(attn, motion, "x")
    with pytest.raises(ValueError):
        similarity(attn, motion[..., :-1], "ncc")


def test_mi_many_maps_matches_chunked():
    # >= 2**24 / 16**2 maps switches the histogram codes to float64; results must not change
    g = torch.Generator().manual_seed(12)
    attn = torch.rand(2, 40000, 9, generator=g)  # (2, K=40000, Q=9): 80,000 maps
    motion = torch.rand(2, 9, generator=g)
    whole = similarity(attn, motion, "mi")
    parts = torch.cat([similarity(attn[:, i:i + 20000], motion, "mi") for i in (0, 20000)], dim=1)
    torch.testing.assert_close(whole, parts, atol=1e-6, rtol=0)
