"""What a checkpoint's (or an export's) "fer" meta says, with the values older files imply.

torch-free: the ONNX backend reads exports through it too. Checkpoints written before the data set
came from the config (issue 16) hold no "image_size" (they were all FER2013's 48 px faces) and keep
their face settings under "preprocess", the group's old name; they are read as they are, never rewritten.
"""

from collections.abc import Mapping

IMAGE_SIZE_BEFORE_ISSUE_16 = 48  # every checkpoint without "image_size" was trained on FER2013's 48x48 faces


def stored_face(meta: Mapping) -> dict | None:
    """The face preparation (align, margin, gamma) the model was trained with, or None when not stored."""
    stored = meta["face"] if "face" in meta else meta.get("preprocess")
    return dict(stored) if stored is not None else None


def stored_image_size(meta: Mapping) -> int:
    """The side of the square grey faces the model takes."""
    return int(meta.get("image_size", IMAGE_SIZE_BEFORE_ISSUE_16))
