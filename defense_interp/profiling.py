"""Measured memory: the peak of tensor memory while a function runs, to check estimates such as
`memory.estimate_memory` against (tests, `benchmarks/gpu_check.py`)."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["measured_peak"]


def measured_peak(fn: Any, device: str | torch.device = "cpu", *, above_start: bool = False) -> int:
    """The peak of tensor memory (bytes) while `fn()` runs, the tensors alive before it included:
    on CUDA the allocator's peak; on the CPU the running sum of every allocation and free the
    profiler records, added to the tensors alive at the start (found through the garbage
    collector). Process memory is higher: the allocator caches freed memory. `above_start`: only
    the peak above what was alive when `fn` started (no census of the tensors alive before)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        start = torch.cuda.memory_allocated(dev)
        fn()
        torch.cuda.synchronize(dev)
        return int(torch.cuda.max_memory_allocated(dev)) - (start if above_start else 0)
    import gc

    from torch.profiler import ProfilerActivity, profile

    gc.collect()
    storages: dict[int, int] = {}
    for obj in [] if above_start else gc.get_objects():
        try:
            tensors = [obj, obj.grad if obj.is_leaf else None] if isinstance(obj, torch.Tensor) else []
        except ReferenceError:  # a weak proxy whose object is gone
            continue
        for t in tensors:
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                storages[t.untyped_storage()._cdata] = t.untyped_storage().nbytes()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()  # allocations and frees, in time order
        if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")
    )
    now = peak = 0
    for _, nbytes in events:
        now += nbytes
        peak = max(peak, now)
    return sum(storages.values()) + peak
