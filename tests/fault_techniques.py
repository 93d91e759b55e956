"""Test-only techniques for the fault tests, registered for a worker process through an entry point (see
tests/workerprocs.py): one that works slowly and reports progress like a training loop, one that runs out
of memory."""

import time

from plugins.base import Context, Param, Technique


class SlowTechnique(Technique):
    """Test only: sleeps in steps and reports progress after each one, like a training loop; changes
    nothing. Source: none, it stands in for a long technique in the fault tests."""

    name = "faults.slow"
    title = "Slow no-op (tests)"
    family = "runtime"
    devices = ("cpu", "cuda")
    params = (
        Param("seconds", float, 2.0, "How long to take in all.", 0.0, 600.0),
        Param("steps", int, 10, "Progress reports, evenly spread.", 1, 10_000),
    )

    def apply(self, model, ctx: Context, params):
        steps = params["steps"]
        for step in range(steps):
            time.sleep(params["seconds"] / steps)
            ctx.report((step + 1) / steps, f"step {step + 1} of {steps}")
        return model


class OutOfMemory(Technique):
    """Test only: fails the way a technique that needs more memory than the worker has fails, on the host
    (MemoryError) or on the GPU (torch.OutOfMemoryError, raised as CUDA raises it). Source: none, it stands
    in for a real out-of-memory error in the fault tests."""

    name = "faults.out-of-memory"
    title = "Runs out of memory (tests)"
    family = "runtime"
    devices = ("cpu", "cuda")
    params = (Param("device", str, "host", "Which memory runs out.", choices=("host", "cuda")),)

    def apply(self, model, ctx: Context, params):
        if params["device"] == "cuda":
            import torch

            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB (simulated)")
        raise MemoryError("simulated: this technique needs more memory than the worker has")
