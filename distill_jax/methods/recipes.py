"""The published hyper-parameters of each method, for configs to start from.

``repdistiller(name, steps_per_epoch=...)`` gives ``config.method`` for the
CRD paper's CIFAR-100 recipe (RepDistiller's ``scripts/run_cifar_distill.sh``:
``T = 4``, CE weight 1, the per-method weight ``-b`` as each method's default,
``init_epochs = 30`` for the two-stage methods), plus DKD (mdistiller: warm-up
20 epochs, ``beta`` per pair) and DIST (``beta = gamma = 2``).
"""

from typing import Any

# Methods whose recipe starts with an initialisation stage of init_epochs
# (its epochs come on top of the main schedule).
TWO_STAGE = ('ab', 'fsp', 'ft')
# Every method name a recipe exists for ('crd_kd' = CRD + KD).
METHODS = ('ce', 'kd', 'dkd', 'dist', 'fitnet', 'at', 'nst', 'ft', 'ab', 'fsp', 'vid',
           'rkd', 'sp', 'cc', 'pkt', 'crd', 'crd_kd')


def repdistiller(name: str, *, steps_per_epoch: int, init_epochs: float = 30,
                 dkd_beta: float = 8.0, dkd_warmup_epochs: float = 20,
                 nce_k: int = 16384) -> dict[str, Any]:
  """``config.method`` (as a dict) for method ``name``.

  Args:
    name: one of ``METHODS``.
    steps_per_epoch: converts the epoch counts to steps.
    init_epochs: length of the first stage of ``TWO_STAGE`` methods.
    dkd_beta: DKD's NCKD weight (per teacher/student pair in mdistiller).
    dkd_warmup_epochs: DKD's warm-up.
    nce_k: CRD negatives.
  """
  if name not in METHODS:
    raise ValueError(f'No recipe for method {name!r}; recipes: {", ".join(METHODS)}.')
  init_steps = int(round(init_epochs * steps_per_epoch))
  recipes = {
      'ce': {},
      'kd': {'temperature': 4.0, 'alpha': 0.1},
      'dkd': {'beta': dkd_beta, 'warmup_steps': int(round(dkd_warmup_epochs * steps_per_epoch))},
      'dist': {'beta': 2.0, 'gamma': 2.0, 'temperature': 4.0},
      # AB and FSP distil only in their first stage, then train on CE (weight 0).
      'ab': {'init_steps': init_steps, 'weight': 0.0},
      'fsp': {'init_steps': init_steps, 'weight': 0.0},
      'ft': {'init_steps': init_steps},
      'crd': {'nce_k': nce_k},
      'crd_kd': {'nce_k': nce_k, 'kd_weight': 1.0},
  }
  return {'name': 'crd' if name == 'crd_kd' else name, **recipes.get(name, {})}
