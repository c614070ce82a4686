"""The demo: a toy real-vs-fake image set made offline, and the autoencoder that makes its fakes.

``fakescope demo`` writes the set with :func:`make_demo_dataset` (crops of scikit-image's
sample photographs; fakes re-synthesised by a small conv autoencoder, after AutoGAN) and trains
and evaluates a detector on it. Training the autoencoder needs torch (the ``train`` extra),
imported only when it runs.
"""

from __future__ import annotations

from fakescope.demo.dataset import make_demo_dataset

__all__ = ["make_demo_dataset"]
