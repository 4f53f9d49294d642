"""A face data set as a LightningDataModule: FER2013 (csv, archive or its image release) or any data
set in class folders (conf/data/folders.yaml). The whole set in memory as uint8 tensors, normalisation
statistics from the training split, augmentation applied to whole batches after transfer. The class
names (their order is the label order) and the image size come from the data config."""

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler
from torch.utils.data.distributed import DistributedSampler

from fer.data import fewfaces
from fer.data.augment import BatchAugment
from fer.data.cache import load
from fer.data.faceset import Reader, ReadSettings
from fer.data.reader import Fer2013
from fer.errors import FerError
from fer.paths import listing
from fer.preprocess import center_crop, normalize

log = logging.getLogger(__name__)
GENERIC_SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}


class Faces(torch.utils.data.Dataset):
    """uint8 faces and labels held in memory; batches are fetched with one index op. `targets`, when
    set (distillation: fer/train/callbacks/distill.py), is a probability vector per face that the
    loss learns instead of the label; the label still scores the training accuracy."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels  # (N, S, S) uint8 (S: the image size), (N,) int64
        self.targets: torch.Tensor | None = None  # (N, classes) float

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        face = (self.images[i], self.labels[i])
        return face if self.targets is None else (*face, self.targets[i])

    def __getitems__(self, indices):  # DataLoader asks for a whole batch at once
        idx = torch.as_tensor(indices)
        if self.targets is None:
            return self.images[idx], self.labels[idx]
        return self.images[idx], self.labels[idx], self.targets[idx]


class EvalShardSampler(DistributedSampler):
    """Rank r of W evaluates faces r, r+W, r+2W, ...: every face exactly once. (DistributedSampler,
    which Lightning would put here, pads with repeats to give all ranks the same count, so 3,589
    faces on 2 ranks would count one face twice.) Uneven shards are fine: metrics are torchmetrics
    states summed across ranks at the end, and no evaluation batch waits for the other ranks."""

    def __init__(self, dataset, num_replicas: int, rank: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))
        self.total_size = len(dataset)

    def __iter__(self):
        return iter(range(self.rank, len(self.dataset), self.num_replicas))


def _keep_batch(batch):  # __getitems__ already returns the stacked batch
    return batch


class FaceDataModule(L.LightningDataModule):
    def __init__(
        self,
        path: str,
        class_names: Sequence[str] | None,
        image_size: int,
        batch_size: int = 128,
        eval_batch_size: int = 512,
        input_size: int | None = None,  # the network's input, a crop of the pictures; None: the whole picture
        augment: BatchAugment | None = None,
        balanced_sampling: bool = False,
        on_bad_row: str = "error",
        val_fraction: float = 0.1,
        seed: int = 0,
        use_cache: bool = True,
        test_fraction: float = 0.2,
        faces: str = "auto",
        split_names: Mapping[str, str] | None = None,  # what the data set calls its train/val/test splits
        reader: Reader | None = None,  # the data format (conf/data/*.yaml `reader:`); None: FER2013's files
    ):
        super().__init__()
        for name, size in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise FerError(f"data.{name} must be a whole number of faces, 1 or more, not {size!r}")
        if not path:
            raise FerError("data.path is not set: give the data set's folder (train/<class>/, test/<class>/) with data.path=DIR")
        self.class_names = _checked_class_names(class_names, path)
        self.image_size, input_size = _checked_sizes(image_size, input_size)
        self.path, self.batch_size, self.eval_batch_size = path, batch_size, eval_batch_size
        self.input_size, self.augment, self.balanced_sampling = input_size, augment, balanced_sampling
        self.on_bad_row, self.val_fraction, self.seed, self.use_cache = on_bad_row, val_fraction, seed, use_cache
        self.test_fraction, self.faces = test_fraction, faces
        self.reader = reader if reader is not None else Fer2013()
        self.split_names = {**GENERIC_SPLIT_NAMES, **(split_names or {})}
        self.splits: dict[str, Faces] = {}
        self.mean, self.std = 0.5, 0.25  # replaced by the training split's statistics in setup()
        self._pinned = False

    def pin_preprocessing(self, mean: float, std: float, input_size: int):
        """Evaluate a trained model: use its stored statistics and input size, not this data's."""
        self.mean, self.std, self.input_size, self._pinned = mean, std, input_size, True

    def prepare_data(self):
        # Fail before any model or trainer is built when the data is not there.
        self.path = str(self.reader.locate(self.path))

    def setup(self, stage: str | None = None):
        if self.splits:
            return
        data = load(self.read_settings(), self.reader, self.use_cache)
        folder = Path(self.path).is_dir()
        if folder:  # class folders have train/validation/test, whatever a data config calls a file's splits
            self.split_names = dict(GENERIC_SPLIT_NAMES)
        for name in ("train", "val", "test"):
            images, labels = data.split(name)
            self.splits[name] = Faces(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels))
        # fit needs test too: the best checkpoint is tested right after, and finding the split
        # missing then would waste the whole training
        needed = {"validate": ("val",), "test": ("test",)}.get(stage, ("train", "val", "test"))
        for name in needed:
            if len(self.splits[name]) == 0:
                if folder:
                    fewfaces.refuse_empty_split(Path(self.path), self.describe(name), data.labels, self.class_names)
                raise FerError(
                    f"{self.path}: the {self.describe(name)} split is empty; "
                    f"training needs faces in each of {', '.join(self.split_names.values())}"
                )
        if stage in (None, "fit"):
            fewfaces.warn_if_few(data.split("train")[1], self.class_names, self.path)
        train = self.splits["train"].images
        if len(train) and not self._pinned:
            pixels = train.float() / 255.0
            self.mean, self.std = float(pixels.mean()), float(pixels.std())
        log.info(
            "%s: %s train / %s val / %s test faces of %d classes; pixel mean %.4f std %.4f",
            self.path,
            *(len(self.splits[n]) for n in ("train", "val", "test")),
            len(self.class_names),
            self.mean,
            self.std,
        )

    def read_settings(self) -> ReadSettings:
        return ReadSettings(
            path=self.path,
            class_names=tuple(self.class_names),
            image_size=self.image_size,
            on_bad_row=self.on_bad_row,
            val_fraction=self.val_fraction,
            test_fraction=self.test_fraction,
            seed=self.seed,
            faces=self.faces,
        )

    def describe(self, split: str) -> str:
        """A split as the data set calls it and what it is for: "PrivateTest (test)", or "test"."""
        own = self.split_names[split]
        return own if own == GENERIC_SPLIT_NAMES[split] else f"{own} ({GENERIC_SPLIT_NAMES[split]})"

    def evaluated_faces(self, split: str, limit, ranks: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """The faces of a split that Lightning's evaluation sees under limit_*_batches (an int: batches
        per rank; a float: a fraction, which runs use only as 1.0): (uint8 images, labels)."""
        faces = self.splits[split]
        batch = self.batch_size if split == "train" else self.eval_batch_size
        n = len(faces) if not isinstance(limit, int) else min(len(faces), limit * batch * ranks)
        return faces.images[:n], faces.labels[:n]

    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.splits["train"].labels, minlength=len(self.class_names))

    def _loader(self, split: str, batch_size: int, shuffle: bool, sampler=None, drop_last: bool = False):
        return DataLoader(
            self.splits[split],
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            drop_last=drop_last,
            collate_fn=_keep_batch,
            num_workers=0,
        )

    def train_dataloader(self):
        sampler = None
        if self.balanced_sampling:
            # Each class drawn equally often: weight every face by 1 / its class's count.
            labels = self.splits["train"].labels
            weights = (1.0 / self.class_counts().clamp(min=1).double())[labels]
            sampler = WeightedRandomSampler(weights, num_samples=len(labels), replacement=True)
        # A short last batch is dropped (BatchNorm statistics of a handful of faces are noise), unless
        # the split is a single batch: a small folder of one's own faces must still train.
        drop_last = len(self.splits["train"]) > self.batch_size
        return self._loader("train", self.batch_size, shuffle=sampler is None, sampler=sampler, drop_last=drop_last)

    def val_dataloader(self):
        return self._loader("val", self.eval_batch_size, shuffle=False, sampler=self._eval_sampler("val"))

    def test_dataloader(self):
        return self._loader("test", self.eval_batch_size, shuffle=False, sampler=self._eval_sampler("test"))

    def _eval_sampler(self, split: str):
        # Training keeps a plain sampler, which Lightning swaps for a DistributedSampler under DDP
        # (a new shuffled share per rank each epoch); evaluation brings its own, which Lightning leaves alone.
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1:
            return None
        return EvalShardSampler(self.splits[split], num_replicas=trainer.world_size, rank=trainer.global_rank)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        # uint8 (B, S, S) travels to the device; normalising and augmenting happen there.
        # Training batches leave as input_size crops; evaluation batches as whole image_size faces, from
        # which the model takes its views (the centre crop, or several for TTA: fer.tta).
        images, labels, *targets = batch  # targets: with distillation, training batches only
        x = normalize(images, self.mean, self.std)
        if self.trainer is not None and self.trainer.training:
            x = self.augment(x, self.input_size) if self.augment is not None else center_crop(x, self.input_size)
        return (x, labels, *targets)


def _checked_class_names(class_names: Sequence[str] | None, path: str) -> list[str]:
    """The data config's class names, in label order; a missing or unusable list is the user's one-line error."""
    if class_names is None:
        found = _class_folders(Path(str(path)).expanduser())
        hint = f"data.class_names=[{','.join(found)}]" if found else "data.class_names=[NAME,NAME,...]"
        raise FerError(
            f"data.class_names is not set: name the classes in label order, e.g. {hint} "
            "(the checkpoint stores the list; infer.py labels faces with it)"
        )
    names = [str(c) for c in class_names] if isinstance(class_names, Sequence) and not isinstance(class_names, str) else []
    if len(names) < 2 or len({n.lower() for n in names}) != len(names):
        raise FerError(f"data.class_names must list two or more different names, not {class_names!r}")
    return names


def _checked_sizes(image_size: int, input_size: int | None) -> tuple[int, int]:
    """(image_size, input_size): the pictures' side and the network's crop of them, which must fit."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise FerError(f"data.image_size must be the side of the square pictures in pixels (48 for FER2013), not {image_size!r}")
    input_size = image_size if input_size is None else input_size
    if input_size > image_size:
        raise FerError(
            f"the network's input (model.input_size={input_size}) is a crop of the {image_size} px pictures "
            f"(data.image_size={image_size}): give model.input_size={image_size} or less "
            "(on FER2013's 48 px faces the default model trains on 44 px crops)"
        )
    return image_size, input_size


def _class_folders(root: Path) -> list[str]:
    """The class folder names of an image-folder data set (train/<class>/, else <class>/), sorted; [] if none."""
    parent = root / "train" if (root / "train").is_dir() else root
    return [e.name for e in listing(parent) if e.is_dir()] if parent.is_dir() else []
