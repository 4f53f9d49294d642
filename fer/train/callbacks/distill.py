"""Knowledge distillation: the network learns from trained teachers' predictions as well as from the labels.
`callbacks=distill callbacks.distill.teachers=[A.ckpt,B.ckpt]` (conf/callbacks/distill.yaml).

Before the first epoch every teacher looks at every Training face through a test-time augmentation
(ten-crop by default: what makes a model 1-2 points better at test time) and the teachers' probabilities
are averaged. Each face's training target becomes (1 - weight) * its label + weight * that average: the
student is taught, from one cheap centre-or-random crop, what the teachers see from ten views, and
which classes a face could also be (a Fear that looks Sad). The targets are computed once, on the
un-augmented faces, so a training step costs what it costs without distillation.
"""

import logging
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from fer.errors import FerError
from fer.paths import in_project
from fer.train.calibration import split_logits
from fer.train.precision import reports_in_bfloat16
from fer.tta import check_mode

log = logging.getLogger(__name__)


class Distill(Callback):
    def __init__(self, teachers: Sequence[str] | str | None = None, weight: float = 0.5, tta: str = "ten_crop"):
        if isinstance(teachers, str):
            teachers = [teachers]
        if not teachers:
            raise FerError(
                "callbacks=distill needs the teachers' checkpoints: callbacks.distill.teachers=[A.ckpt,B.ckpt] "
                "(e.g. fer/weights/fer2013_regularized.ckpt)"
            )
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0:
            raise FerError(
                f"callbacks.distill.weight is the teachers' share of each target, between 0 and 1 (e.g. 0.5), not {weight!r}"
            )
        self.teachers = [in_project(t) for t in teachers]  # the shipped model from any directory
        for path in self.teachers:
            if not path.is_file():
                raise FerError(f"callbacks.distill.teachers: {path} is not a file; give checkpoints this project wrote")
        self.weight, self.tta = float(weight), check_mode(tta)

    def setup(self, trainer, pl_module, stage):
        # The data module is set up before the callbacks (Lightning's order): its faces are in memory here.
        if stage != "fit":
            return
        train = trainer.datamodule.splits["train"]
        bf16 = reports_in_bfloat16(trainer.precision, pl_module.device)
        probs = self.teacher_probabilities(train.images, pl_module.class_names, bf16)
        agree = float((probs.argmax(1) == train.labels).double().mean()) if len(probs) else float("nan")
        log.info("distillation: the teachers agree with %.2f%% of the Training labels", 100 * agree)
        labels = F.one_hot(train.labels, len(pl_module.class_names)).float()
        train.targets = (1 - self.weight) * labels + self.weight * probs

    def teacher_probabilities(self, images: torch.Tensor, class_names: Sequence[str], bf16: bool = False) -> torch.Tensor:
        """uint8 faces (N, S, S) -> (N, classes): the teachers' probabilities under self.tta, averaged.
        bf16: the teachers look in bfloat16, as the reports after a test do where the run trains in it natively
        (about twice as fast; probabilities move by hundredths, which a soft target does not notice)."""
        from fer.train.module import EmotionClassifier

        started, total = time.monotonic(), torch.zeros(len(images), len(class_names))
        for path in self.teachers:
            teacher = EmotionClassifier.from_checkpoint(path)
            if list(teacher.class_names) != list(class_names):
                raise FerError(
                    f"callbacks.distill.teachers: {path} knows the classes {teacher.class_names}, "
                    f"this run has {list(class_names)}; a teacher must have the same class list"
                )
            mean, std = float(teacher.pixel_mean), float(teacher.pixel_std)  # as the teacher was trained
            logits = split_logits(teacher, images, mean, std, teacher.input_size, self.tta, bf16)
            total += torch.softmax(logits, 1)
        log.info(
            "distillation: %d teacher(s), %s views, on %d Training faces in %.0f s; targets are %.2f label + %.2f teachers",
            len(self.teachers),
            self.tta,
            len(images),
            time.monotonic() - started,
            1 - self.weight,
            self.weight,
        )
        return total / len(self.teachers)
