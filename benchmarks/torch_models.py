"""PyTorch reference models and KD steps for the side-by-side benchmark.

Nothing here imports JAX. Two model families, each written to match the
distill_jax model it is compared with layer for layer:

* ``ResNetCIFAR`` (``resnet32x4``, ``resnet8x4``): RepDistiller's
  ``models/resnet.py`` (Tian et al., CRD, ICLR 2020): 3x3 stem conv-BN-ReLU,
  three stages of post-activation BasicBlocks (1x1 conv + BN projection
  shortcut where the shape changes), global average pooling, linear
  classifier; Kaiming-normal (fan_out) conv init. Parameter counts equal
  ``distill_jax.models.resnet_cifar``'s (7,433,860 and 1,233,540 for 100
  classes; ``tests/benchmarks/test_run.py`` checks them).
* ``Llama``: a Llama-style decoder (RMSNorm, rotate-half RoPE, grouped-query
  attention through ``F.scaled_dot_product_attention`` (what HF transformers
  uses on CPU), SwiGLU MLP, tied embeddings), the same architecture and
  parameter count as ``distill_jax.llm.model.Llama``.

The KD steps are what a PyTorch user writes: the teacher under
``torch.no_grad()`` in eval mode, the student in train mode, the loss, backward,
``optimizer.step()``. The vision step uses SGD (momentum 0.9, weight decay
5e-4, lr 0.05; RepDistiller's recipe), the LM step AdamW.
"""

import torch
from torch import nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------
# ResNet-CIFAR (RepDistiller)


def _conv3x3(in_planes, out_planes, stride=1):
  return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride,
                   padding=1, bias=False)


class BasicBlock(nn.Module):
  """conv-BN-ReLU-conv-BN + shortcut, ReLU (RepDistiller's BasicBlock)."""

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = _conv3x3(inplanes, planes, stride)
    self.bn1 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU(inplace=True)
    self.conv2 = _conv3x3(planes, planes)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = downsample

  def forward(self, x):
    residual = x
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    if self.downsample is not None:
      residual = self.downsample(x)
    out = out + residual
    return F.relu(out)


class ResNetCIFAR(nn.Module):
  """CIFAR ResNet of depth ``6n + 2`` (RepDistiller ``ResNet``)."""

  def __init__(self, depth, num_filters, num_classes=100):
    super().__init__()
    n = (depth - 2) // 6
    self.inplanes = num_filters[0]
    self.conv1 = nn.Conv2d(3, num_filters[0], kernel_size=3, padding=1,
                           bias=False)
    self.bn1 = nn.BatchNorm2d(num_filters[0])
    self.relu = nn.ReLU(inplace=True)
    self.layer1 = self._make_layer(num_filters[1], n)
    self.layer2 = self._make_layer(num_filters[2], n, stride=2)
    self.layer3 = self._make_layer(num_filters[3], n, stride=2)
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    self.fc = nn.Linear(num_filters[3], num_classes)
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
      elif isinstance(m, nn.BatchNorm2d):
        nn.init.constant_(m.weight, 1)
        nn.init.constant_(m.bias, 0)

  def _make_layer(self, planes, blocks, stride=1):
    downsample = None
    if stride != 1 or self.inplanes != planes:
      downsample = nn.Sequential(
          nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=stride,
                    bias=False),
          nn.BatchNorm2d(planes))
    layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
    self.inplanes = planes
    layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)

  def forward(self, x):
    x = self.relu(self.bn1(self.conv1(x)))
    x = self.layer3(self.layer2(self.layer1(x)))
    x = torch.flatten(self.avgpool(x), 1)
    return self.fc(x)


_SMALL = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)


def resnet32x4(num_classes=100):
  return ResNetCIFAR(32, _WIDE, num_classes)


def resnet8x4(num_classes=100):
  return ResNetCIFAR(8, _WIDE, num_classes)


# name -> constructor(num_classes); the names of distill_jax's registry.
VISION_MODELS = {'resnet32x4': resnet32x4, 'resnet8x4': resnet8x4}
for _depth in (8, 14, 20, 32, 44, 56, 110):
  VISION_MODELS[f'resnet{_depth}'] = (
      lambda num_classes=100, d=_depth: ResNetCIFAR(d, _SMALL, num_classes))


def kd_loss(student_logits, teacher_logits, labels, *, temperature, alpha):
  """``alpha * CE + (1 - alpha) * T**2 * KL(p_t^T || p_s^T)`` (batch mean)."""
  ce = F.cross_entropy(student_logits, labels)
  kl = F.kl_div(F.log_softmax(student_logits / temperature, dim=-1),
                F.log_softmax(teacher_logits / temperature, dim=-1),
                reduction='batchmean', log_target=True)
  return alpha * ce + (1.0 - alpha) * temperature**2 * kl


def torchdistill_forward_hook_manager():
  """``torchdistill.core.forward_hook.ForwardHookManager``, loaded from its file.

  ``import torchdistill.core`` imports torchdistill's model zoo and with it
  torchvision; the torchvision wheels available next to a ``+cpu`` torch may
  be CUDA builds whose C extension cannot load (``operator torchvision::nms
  does not exist``). The hook manager itself needs only torch and
  ``torchdistill.common``, so its module is executed directly (same code, no
  torchvision).
  """
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import torchdistill  # pylint: disable=g-import-not-at-top
  name = 'torchdistill.core.forward_hook'
  if name not in sys.modules:
    path = os.path.join(os.path.dirname(torchdistill.__file__), 'core', 'forward_hook.py')
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
  return sys.modules[name].ForwardHookManager


class _KDStep:
  """Shared update: ``forward_loss`` (under autocast if asked), backward, step.

  ``device``: where the models live (the caller passes inputs there);
  ``autocast``: ``None`` (float32) or a dtype for ``torch.autocast``. CUDA
  updates end with ``torch.cuda.synchronize()`` so that a call's wall time
  is the update's.
  """

  def _compile(self):
    """torch.compile the forward + loss and the optimizer step, from a cold cache."""
    import torch._inductor.config as inductor_config  # pylint: disable=g-import-not-at-top
    inductor_config.force_disable_caches = True  # The first step's time is the compile time.
    self._forward_loss = torch.compile(self._forward_loss)
    self._optimizer_step = torch.compile(self.optimizer.step)

  def _setup(self, teacher, student, device, autocast):
    self.device = torch.device(device)
    self.autocast = autocast
    self.teacher = teacher.to(self.device).eval()
    for p in self.teacher.parameters():
      p.requires_grad_(False)
    self.student = student.to(self.device).train()

  def __call__(self, *args):
    with torch.autocast(self.device.type, dtype=self.autocast,
                        enabled=self.autocast is not None):
      loss = self._forward_loss(*args)
    self.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    self._optimizer_step()
    if self.device.type == 'cuda':
      torch.cuda.synchronize(self.device)
    return loss.detach()


class VisionKDStep(_KDStep):
  """One KD update: teacher (eval, no_grad) -> student (train) -> SGD.

  ``loss='ours'`` is :func:`kd_loss`; ``loss='torchdistill'`` is
  ``torchdistill.losses.mid_level.KDLoss`` on the I/O dicts of torchdistill's
  ``ForwardHookManager`` (hooks on both models' ``fc``), which is how
  torchdistill's ``DistillationBox`` computes the loss. ``compile=True``
  follows PyTorch's recipe: the forward + loss in one ``torch.compile``
  graph (inductor, CPU; backward through AOTAutograd's compiled graph) and a
  compiled ``optimizer.step``.
  """

  def __init__(self, teacher, student, *, temperature=4.0, alpha=0.1,
               lr=0.05, loss='ours', compile=False, device='cpu', autocast=None):
    self._setup(teacher, student, device, autocast)
    self.temperature, self.alpha = temperature, alpha
    self.optimizer = torch.optim.SGD(self.student.parameters(), lr=lr,
                                     momentum=0.9, weight_decay=5e-4)
    if loss == 'torchdistill':
      if compile:
        raise ValueError('The torchdistill column runs eagerly (forward hooks).')
      from torchdistill.losses.mid_level import KDLoss  # pylint: disable=g-import-not-at-top
      ForwardHookManager = torchdistill_forward_hook_manager()  # pylint: disable=invalid-name
      self.teacher_hooks = ForwardHookManager(self.device)
      self.teacher_hooks.add_hook(self.teacher, 'fc', requires_input=False)
      self.student_hooks = ForwardHookManager(self.device)
      self.student_hooks.add_hook(self.student, 'fc', requires_input=False)
      self.td_loss = KDLoss('fc', 'output', 'fc', 'output',
                            temperature=temperature, alpha=alpha)
      self._forward_loss = self._forward_loss_torchdistill
    elif loss == 'ours':
      self._forward_loss = self._forward_loss_plain
    else:
      raise ValueError(f'loss={loss!r}; choose ours or torchdistill.')
    self._optimizer_step = self.optimizer.step
    if compile:
      self._compile()

  def _forward_loss_plain(self, images, labels):
    with torch.no_grad():
      teacher_logits = self.teacher(images)
    return kd_loss(self.student(images), teacher_logits, labels,
                   temperature=self.temperature, alpha=self.alpha)

  def _forward_loss_torchdistill(self, images, labels):
    with torch.no_grad():
      self.teacher(images)
    teacher_io = self.teacher_hooks.pop_io_dict()
    self.student(images)
    student_io = self.student_hooks.pop_io_dict()
    return self.td_loss(student_io, teacher_io, labels)


# ----------------------------------------------------------------------------
# Llama-style decoder


class RMSNorm(nn.Module):

  def __init__(self, dim, eps):
    super().__init__()
    self.eps = eps
    self.weight = nn.Parameter(torch.ones(dim))

  def forward(self, x):
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
    return (x32 * self.weight).to(x.dtype)


def rope_tables(seq_len, head_dim, theta):
  inv_freq = 1.0 / theta**(torch.arange(0, head_dim, 2).float() / head_dim)
  angles = torch.arange(seq_len).float()[:, None] * inv_freq
  angles = torch.cat([angles, angles], dim=-1)
  return angles.cos(), angles.sin()


def _rotate_half(x):
  half = x.shape[-1] // 2
  return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class Attention(nn.Module):

  def __init__(self, d, h, kv, dh):
    super().__init__()
    self.h, self.kv, self.dh = h, kv, dh
    self.q = nn.Linear(d, h * dh, bias=False)
    self.k = nn.Linear(d, kv * dh, bias=False)
    self.v = nn.Linear(d, kv * dh, bias=False)
    self.o = nn.Linear(h * dh, d, bias=False)

  def forward(self, x, cos, sin):
    b, t, _ = x.shape
    q = self.q(x).view(b, t, self.h, self.dh).transpose(1, 2)
    k = self.k(x).view(b, t, self.kv, self.dh).transpose(1, 2)
    v = self.v(x).view(b, t, self.kv, self.dh).transpose(1, 2)
    q = q * cos + _rotate_half(q) * sin
    k = k * cos + _rotate_half(k) * sin
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                         enable_gqa=self.h != self.kv)
    return self.o(out.transpose(1, 2).reshape(b, t, self.h * self.dh))


class SwiGLU(nn.Module):

  def __init__(self, d, f):
    super().__init__()
    self.gate = nn.Linear(d, f, bias=False)
    self.up = nn.Linear(d, f, bias=False)
    self.down = nn.Linear(f, d, bias=False)

  def forward(self, x):
    return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):

  def __init__(self, d, f, h, kv, dh, eps):
    super().__init__()
    self.attn_norm = RMSNorm(d, eps)
    self.attn = Attention(d, h, kv, dh)
    self.mlp_norm = RMSNorm(d, eps)
    self.mlp = SwiGLU(d, f)

  def forward(self, x, cos, sin):
    x = x + self.attn(self.attn_norm(x), cos, sin)
    return x + self.mlp(self.mlp_norm(x))


class Llama(nn.Module):
  """Tied-embedding Llama decoder; ``forward(tokens [B, T]) -> logits [B, T, V]``."""

  def __init__(self, *, vocab_size, hidden_size, intermediate_size, num_layers,
               num_heads, num_kv_heads, head_dim=0, rope_theta=10000.0,
               rms_norm_eps=1e-5, max_seq_len=2048):
    super().__init__()
    dh = head_dim or hidden_size // num_heads
    self.embed = nn.Embedding(vocab_size, hidden_size)
    self.layers = nn.ModuleList(
        Block(hidden_size, intermediate_size, num_heads, num_kv_heads, dh,
              rms_norm_eps) for _ in range(num_layers))
    self.final_norm = RMSNorm(hidden_size, rms_norm_eps)
    cos, sin = rope_tables(max_seq_len, dh, rope_theta)
    self.register_buffer('cos', cos, persistent=False)
    self.register_buffer('sin', sin, persistent=False)
    for p in self.parameters():
      if p.dim() > 1:
        nn.init.normal_(p, std=0.02)

  def forward(self, tokens):
    t = tokens.shape[1]
    cos, sin = self.cos[:t], self.sin[:t]
    x = self.embed(tokens)
    for layer in self.layers:
      x = layer(x, cos, sin)
    return F.linear(self.final_norm(x), self.embed.weight).float()


def token_kl(student_logits, teacher_logits, loss_mask, *, temperature=1.0):
  """Masked mean over tokens of ``T**2 KL(p_t^T || p_s^T)`` (distill_jax ``token_kl``)."""
  log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
  log_p_t = F.log_softmax(teacher_logits / temperature, dim=-1)
  kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1) * temperature**2
  return (kl * loss_mask).sum() / loss_mask.sum().clamp_min(1.0)


class LMKDStep(_KDStep):
  """One token-level KD update: teacher (eval, no_grad) -> student -> AdamW.

  ``compile=True``: forward + loss in one ``torch.compile`` graph and a
  compiled ``optimizer.step`` (as :class:`VisionKDStep`).
  """

  def __init__(self, teacher, student, *, lr=1e-4, temperature=1.0,
               compile=False, device='cpu', autocast=None):
    self._setup(teacher, student, device, autocast)
    self.temperature = temperature
    self.optimizer = torch.optim.AdamW(self.student.parameters(), lr=lr,
                                       weight_decay=0.0)
    self._forward_loss = self._forward_loss_plain
    self._optimizer_step = self.optimizer.step
    if compile:
      self._compile()

  def _forward_loss_plain(self, inputs, loss_mask):
    with torch.no_grad():
      teacher_logits = self.teacher(inputs)
    return token_kl(self.student(inputs), teacher_logits, loss_mask,
                    temperature=self.temperature)


def num_params(model: nn.Module) -> int:
  """All parameters (trainable or frozen), as distill_jax counts ``params``."""
  return sum(p.numel() for p in model.parameters())
