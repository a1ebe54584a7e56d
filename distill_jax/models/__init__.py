"""Model zoo: Flax Linen modules returning ``(logits, features)``.

Every model is registered by name in the ``models`` namespace and built as
``registry.get('models', name)(num_classes=..., **kwargs)``; every one accepts
``dtype`` (compute dtype; parameters stay float32). ``__call__(x, *, train)``
takes a float32 NHWC batch ``[B, H, W, C]`` and returns float32 logits
``[B, num_classes]`` and a dict of named features (``'stem'``,
``'stage1'``.. ``'stageN'``, ``'pre_logits'`` for conv nets; ``'hidden1'``..
``'hiddenN'``, ``'pre_logits'`` for the MLP); each module's docstring lists
its feature names and shapes.

Families (one file each):

* ``mlp``: :class:`MLP` (Hinton et al. 2015's MNIST teacher and student);
* ``cnn``: :class:`CNN`, a small CNN for 28x28 / 32x32 inputs;
* ``resnet8`` .. ``resnet110``, ``resnet8x4``, ``resnet32x4``,
  ``resnet_cifar``: :class:`ResNetCIFAR` (CRD paper's CIFAR ResNets);
* ``wrn_16_1``, ``wrn_16_2``, ``wrn_40_1``, ``wrn_40_2``, ``wide_resnet``:
  :class:`WideResNet`.

BatchNorm state lives in the ``batch_stats`` collection (apply with
``mutable=['batch_stats']`` when ``train=True``); dropout uses the
``'dropout'`` rng. Parameters carry logical axis names (see
:mod:`distill_jax.models.layers`).
"""

from distill_jax.models.cnn import CNN
from distill_jax.models.mlp import MLP
from distill_jax.models.resnet_cifar import ResNetCIFAR
from distill_jax.models.wide_resnet import WideResNet

__all__ = ['CNN', 'MLP', 'ResNetCIFAR', 'WideResNet']
