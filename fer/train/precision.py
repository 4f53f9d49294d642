"""Which numeric precision a run trains in.

`trainer.precision=auto` (the default) picks bfloat16 mixed precision on CPUs that compute it
natively (AVX-512 BF16 or AMX): convolutions run about 1.6-1.9x faster there, with fp32 master
weights, so checkpoints and inference are unchanged. Elsewhere bf16 is emulated and slower than
fp32, so auto means fp32. Any Lightning value (32-true, bf16-mixed, 16-mixed) overrides it.
"""

import torch

AUTO = "auto"


def cpu_has_native_bfloat16() -> bool:
    # Private helpers, but the ones PyTorch's own CPU autocast tests use; absent in old releases.
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def _trains_on_cpu(accelerator: str) -> bool:
    accelerator = str(accelerator).lower()
    if accelerator == "cpu":
        return True
    return accelerator == "auto" and not torch.cuda.is_available() and not torch.backends.mps.is_available()


def choose(requested, accelerator: str) -> tuple[str, str]:
    """(precision for Lightning's Trainer, why) for `trainer.precision` and `trainer.accelerator`."""
    requested = str(requested)
    if requested != AUTO:
        return requested, "as configured"
    if not _trains_on_cpu(accelerator):
        return "32-true", "auto on an accelerator (trainer=gpu chooses 16-mixed)"
    if cpu_has_native_bfloat16():
        return "bf16-mixed", "auto: this CPU has native bfloat16 (AVX-512 BF16/AMX); trainer.precision=32-true for fp32"
    return "32-true", "auto: this CPU has no native bfloat16, where bf16 would be slower than fp32"


def reports_in_bfloat16(trainer_precision, device) -> bool:
    """Whether the reports after a run's test (the Training split's score, calibration) look at their faces
    in bfloat16: when the run itself computes in bf16 on a CPU that has it natively (auto there), where
    those passes run about twice as fast; their accuracies and temperatures stay within a few faces and
    hundredths of fp32's (benchmarks/post_fit_cost.py). The test and validation steps stay in fp32."""
    if torch.device(device).type != "cpu" or not str(trainer_precision).startswith("bf16"):
        return False
    return cpu_has_native_bfloat16()
