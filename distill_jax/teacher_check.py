"""Where a run's teachers come from, and the sanity check run on them before training.

A task records each loaded teacher as a ``TeacherSource`` (``Compiled.teacher_sources``):
its run's workdir or its pretrained file, the checkpoint step and SHA-256, and
what its own run measured. The loop writes the sources into the student's
``config.json`` (``teacher_checkpoints``) and, before the first step, runs the
evaluation on ``CHECK_BATCHES`` eval batches: ``check`` refuses a teacher whose
figures there are not finite (damaged weights, or an overflow in
``teacher.dtype``), whose accuracy is below half the one its own run recorded
(compared only when those batches are large enough to expect
``MIN_EXPECTED_CORRECT`` right answers at that accuracy, so chance cannot
trip it), or whose next-token loss is more than ``NLL_MARGIN`` nats worse than
a uniform guess over its vocabulary (a random model scores about that guess).
Several teachers (``multi_teacher``): each one's figures (``teacher<i>_``)
against its own record.
"""

import dataclasses
import math
from typing import Any, Sequence

CHECK_BATCHES = 2
NLL_MARGIN = 1.0  # nats per token above log(vocabulary size)
MIN_EXPECTED_CORRECT = 20  # below half of it by chance: p < 0.01 (Poisson)


class TeacherCheckError(ValueError):
  """A teacher's outputs on the first eval batches show it is broken."""


@dataclasses.dataclass(frozen=True)
class TeacherSource:
  """One loaded teacher.

  Attributes:
    name: the teacher run's workdir, or the pretrained file or folder.
    step: the checkpoint step it was restored from (runs; None for files).
    sha256: the checkpoint's digest (``checksums.digest``) or the file's.
    accuracy: the eval accuracy its own run recorded (None: not recorded).
    vocab_size: language models: its vocabulary (a uniform guess scores
      ``log(vocab_size)`` nats per token).
  """
  name: str
  step: int | None = None
  sha256: str | None = None
  accuracy: float | None = None
  vocab_size: int | None = None

  def provenance(self) -> dict[str, Any]:
    """What the student's ``config.json`` records of it."""
    return {'source': self.name, 'step': self.step, 'sha256': self.sha256}


def _accuracy_checks(summary: dict[str, Any], sources: Sequence[TeacherSource]
                     ) -> list[tuple[str, float, float, str]]:
  """``(figure, measured, recorded, teacher)`` of each accuracy with a record:
  ``teacher_accuracy`` against the lowest record (of one teacher, or of the
  weakest in an ensemble), ``teacher<i>_accuracy`` against teacher i's."""
  pairs = []
  recorded = [s.accuracy for s in sources if s.accuracy is not None]
  if recorded and 'teacher_accuracy' in summary:
    pairs.append(('teacher_accuracy', summary['teacher_accuracy'], min(recorded),
                  ', '.join(s.name for s in sources)))
  for i, source in enumerate(sources):
    if source.accuracy is not None and f'teacher{i}_accuracy' in summary:
      pairs.append((f'teacher{i}_accuracy', summary[f'teacher{i}_accuracy'], source.accuracy,
                    source.name))
  return pairs


def check(summary: dict[str, Any], sources: Sequence[TeacherSource], dtype: str) -> None:
  """Refuses the teachers ``sources`` when their figures in ``summary`` (the
  eval summary of the first ``CHECK_BATCHES`` batches) show they are broken.

  Raises:
    TeacherCheckError: non-finite teacher figures, an accuracy below half the
      recorded one, or a next-token loss above ``log(vocab_size) + NLL_MARGIN``.
  """
  names = ', '.join(s.name for s in sources)
  where = f'on the first {CHECK_BATCHES} eval batches'
  teacher = {k: v for k, v in summary.items()
             if k.startswith('teacher') and isinstance(v, float)}
  broken = {k: v for k, v in teacher.items() if not math.isfinite(v)}
  if broken:
    shown = ', '.join(f'{k}={v}' for k, v in broken.items())
    raise TeacherCheckError(
        f'The teacher ({names}) gives non-finite outputs {where} ({shown}): its weights are '
        f'damaged, or its activations overflow in teacher.dtype={dtype} (try float32).')
  examples = summary.get('examples', 0)
  for figure, measured, recorded, name in _accuracy_checks(teacher, sources):
    if examples * recorded >= MIN_EXPECTED_CORRECT and measured < 0.5 * recorded:
      raise TeacherCheckError(
          f'The teacher ({name}) reaches {figure} {measured:.4f} {where} ({examples} '
          f'examples), below half the {recorded:.4f} its run recorded: its checkpoint does not '
          'hold the model that run evaluated (damaged, or another model), or it sees other '
          'inputs.')
  vocabularies = [s.vocab_size for s in sources if s.vocab_size]
  nll = teacher.get('teacher_nll')
  if vocabularies and nll is not None:
    uniform = math.log(max(vocabularies))
    if nll > uniform + NLL_MARGIN:
      raise TeacherCheckError(
          f'The teacher ({names}) scores {nll:.3f} nats per token {where}, more than '
          f'{NLL_MARGIN:g} worse than a uniform guess over its {max(vocabularies):,} tokens '
          f'({uniform:.3f}): its weights are damaged, or the tokenizer is not the one it was '
          'trained with.')
