"""The two numbers every speed claim is measured against: copy bandwidth and the floor it implies.

Decoding one token at batch 1 must read every weight once, so
`weight_bytes / bandwidth` is the fastest a step can possibly be (the roofline).
The bandwidth is measured on the spot, as a large device-to-device copy,
counting bytes read plus bytes written.
"""

from __future__ import annotations

import time

import torch


def measure_copy_bandwidth(device: torch.device, num_bytes: int = 1 << 30, repeats: int = 10) -> float:
    """Bytes per second moved by `dst.copy_(src)` (read + write), median of several copies."""
    if device.type == "cpu":
        num_bytes = min(num_bytes, 256 << 20)
    src = torch.empty(num_bytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start_event = torch.cuda.Event(enable_timing=True)
            end_event = torch.cuda.Event(enable_timing=True)
            start_event.record()
            dst.copy_(src)
            end_event.record()
            end_event.synchronize()
            times.append(start_event.elapsed_time(end_event) / 1e3)
        else:
            start = time.perf_counter()
            dst.copy_(src)
            times.append(time.perf_counter() - start)
    times.sort()
    return 2 * src.numel() * 4 / times[len(times) // 2]

