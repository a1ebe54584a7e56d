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
  :class:`WideResNet`;
* ``vgg8``, ``vgg11``, ``vgg13``, ``vgg``: :class:`VGG` (CIFAR VGG-BN);
* ``mobilenetv2`` (RepDistiller's ``mobile_half``), ``mobilenetv2_cifar``:
  :class:`MobileNetV2`;
* ``shufflenetv1``: :class:`ShuffleNetV1`; ``shufflenetv2``:
  :class:`ShuffleNetV2`;
* ``resnet50``, ``resnet50_cifar``: :class:`ResNet50CIFAR`.

BatchNorm state lives in the ``batch_stats`` collection (apply with
``mutable=['batch_stats']`` when ``train=True``); dropout uses the
``'dropout'`` rng. Parameters carry logical axis names (see
:mod:`distill_jax.models.layers`).
"""

from distill_jax.models.cnn import CNN
from distill_jax.models.mlp import MLP
from distill_jax.models.resnet_cifar import ResNetCIFAR
from distill_jax.models.wide_resnet import WideResNet
from distill_jax.models.vgg import VGG
from distill_jax.models.mobilenet_v2 import MobileNetV2
from distill_jax.models.shufflenet_v1 import ShuffleNetV1
from distill_jax.models.shufflenet_v2 import ShuffleNetV2
from distill_jax.models.resnet50_cifar import ResNet50CIFAR

__all__ = ['CNN', 'MLP', 'MobileNetV2', 'ResNet50CIFAR', 'ResNetCIFAR', 'ShuffleNetV1',
           'ShuffleNetV2', 'VGG', 'WideResNet']
