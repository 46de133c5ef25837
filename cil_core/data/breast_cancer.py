"""The Wisconsin Breast Cancer (diagnostic) data set, as scikit-learn ships it, encoded as spikes.

569 samples, 30 real-valued features, 2 classes (0 = malignant, 1 = benign). Nothing is
downloaded.

Encoding (deterministic, stated once here):

1. Split: a stratified split with ``train_fraction`` of the samples for training, fixed by
   ``seed``.
2. Standardize each feature with the mean and standard deviation of the *training* split:
   :math:`z = (f - \\mu)/\\sigma`.
3. Two input neurons per feature (ON/OFF): rates :math:`r^+ = \\mathrm{clip}(z/z_{max}, 0, 1)`,
   :math:`r^- = \\mathrm{clip}(-z/z_{max}, 0, 1)` with :math:`z_{max} = 2`, plus a bias-like
   channel pair at rate 0.5 so that every sample drives the network.
4. Deterministic rate code (a sigma-delta / integrate-and-fire encoder): input neuron ``k``
   spikes at step ``t`` iff :math:`\\lfloor (t+1) r_k + \\phi \\rfloor > \\lfloor t\\,r_k + \\phi \\rfloor`
   with phase :math:`\\phi = 0.5`. A rate of 1 spikes every step; the spike count over ``T``
   steps is :math:`\\approx r_k T`.

Result: ``x`` of shape ``[T, N, 62]`` (float 0/1), ``y`` of shape ``[N]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import SpikeData

Z_MAX = 2.0


def rate_encode(rates: torch.Tensor, num_steps: int, phase: float = 0.5) -> torch.Tensor:
    """Deterministic rate code: ``rates`` ``[N, F]`` in [0, 1] → spikes ``[T, N, F]``."""
    r = rates.clamp(0, 1).to(torch.float64)
    t = torch.arange(num_steps + 1, dtype=torch.float64).view(-1, 1, 1)
    acc = torch.floor(t * r.unsqueeze(0) + phase)
    return (acc[1:] > acc[:-1]).to(torch.float32)


def encode_features(z: np.ndarray, num_steps: int) -> torch.Tensor:
    """Standardized features ``[N, F]`` → ON/OFF rate-coded spikes ``[T, N, 2F + 2]``."""
    zt = torch.as_tensor(z, dtype=torch.float64)
    on = (zt / Z_MAX).clamp(0, 1)
    off = (-zt / Z_MAX).clamp(0, 1)
    bias = torch.full((zt.shape[0], 2), 0.5, dtype=torch.float64)
    return rate_encode(torch.cat([on, off, bias], dim=1), num_steps)


@dataclass
class EncodedSplit:
    train: SpikeData
    test: SpikeData
    num_steps: int
    n_inputs: int
    n_classes: int = 2


def load_breast_cancer_spikes(num_steps: int = 16, train_fraction: float = 0.7, seed: int = 0) -> EncodedSplit:
    """Load, split, standardize and encode the data set (see the module docstring)."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    data = load_breast_cancer()
    f_tr, f_te, y_tr, y_te = train_test_split(
        data.data, data.target, train_size=train_fraction, random_state=seed, stratify=data.target
    )
    mu, sd = f_tr.mean(0), f_tr.std(0) + 1e-12
    x_tr = encode_features((f_tr - mu) / sd, num_steps)
    x_te = encode_features((f_te - mu) / sd, num_steps)
    return EncodedSplit(
        train=SpikeData(x_tr, torch.as_tensor(y_tr)),
        test=SpikeData(x_te, torch.as_tensor(y_te)),
        num_steps=num_steps,
        n_inputs=x_tr.shape[-1],
    )


def load_breast_cancer_pca(num_steps: int = 12, components: int = 7, seed: int = 0) -> EncodedSplit:
    """The data set reduced to ``2 * components + 2`` input channels (16 by default, what a Xylo
    chip takes): the principal components of the standardized features (fitted on the training
    split), whitened (:math:`z_k = p_k / \sqrt{\lambda_k}`), then ON/OFF rate-coded plus the bias
    pair as :func:`encode_features` does."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.decomposition import PCA
    from sklearn.model_selection import train_test_split

    d = load_breast_cancer()
    f_tr, f_te, y_tr, y_te = train_test_split(d.data, d.target, train_size=0.7, random_state=seed, stratify=d.target)
    mu, sd = f_tr.mean(0), f_tr.std(0) + 1e-12
    pca = PCA(components, random_state=0).fit((f_tr - mu) / sd)

    def z(f: np.ndarray) -> np.ndarray:
        return pca.transform((f - mu) / sd) / np.sqrt(pca.explained_variance_)

    x_tr, x_te = encode_features(z(f_tr), num_steps), encode_features(z(f_te), num_steps)
    return EncodedSplit(train=SpikeData(x_tr, torch.as_tensor(y_tr)), test=SpikeData(x_te, torch.as_tensor(y_te)),
                        num_steps=num_steps, n_inputs=x_tr.shape[-1])
