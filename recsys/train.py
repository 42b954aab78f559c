"""Training data for next-item models: fixed-length windows over each user's training sequence."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from recsys.data import DataError, Split


class NextItemWindows(Dataset):
    """Windows of `max_len + 1` items, left-padded with -1, cut from the end of each training sequence with stride
    `max_len`, so every training interaction is a prediction target exactly once per epoch."""

    def __init__(self, split: Split, max_len: int):
        self.max_len = max_len
        windows = []
        for seq in split.train_sequences():
            end = len(seq)
            while end >= 2:
                start = max(0, end - max_len - 1)
                w = np.full(max_len + 1, -1, dtype=np.int64)
                w[max_len + 1 - (end - start):] = seq[start:end]
                windows.append(w)
                end -= max_len
        if not windows:
            raise DataError("no user has two training interactions: nothing to learn from")
        self.windows = torch.from_numpy(np.stack(windows))

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.windows[i]
