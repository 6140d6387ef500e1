"""Streaming statistics, so memory does not grow with the number of samples, masks or steps."""
from __future__ import annotations

import torch


class RunningMoments:
    """Per-slot running mean and variance (Welford's one-pass update), one row at a time.

    Rows are added in the order given; adding the same rows in the same order gives bit-identical results however
    the caller chunked them.

    Args:
        shape: (M, ...) one slot per explained sample.
        dtype, device: of the statistics (where the rows come from); the counts stay on the host, where they are
            read as Python ints without a device synchronisation.
    """

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> None:
        self.count = torch.zeros(shape[0], dtype=torch.long)
        self.mean = torch.zeros(shape, dtype=dtype, device=device)
        self._m2 = torch.zeros(shape, dtype=dtype, device=device)

    def add(self, index: torch.Tensor, rows: torch.Tensor) -> None:
        """Add ``rows[j]`` to slot ``index[j]`` for every j, in order. rows: (n, ...), index: (n,)."""
        for j in range(rows.shape[0]):
            i = int(index[j])
            self.count[i] += 1
            delta = rows[j] - self.mean[i]
            self.mean[i] += delta / int(self.count[i])
            self._m2[i] += delta * (rows[j] - self.mean[i])

    def variance(self, unbiased: bool = False) -> torch.Tensor:
        """(M, ...) variance per slot (population by default; ``unbiased`` divides by count - 1)."""
        denom = (self.count - (1 if unbiased else 0)).clamp_min(1).to(device=self.mean.device, dtype=self.mean.dtype)
        return self._m2 / denom.view((-1,) + (1,) * (self.mean.ndim - 1))
