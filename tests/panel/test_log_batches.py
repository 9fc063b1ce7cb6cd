"""A batch of lines lands in a node's log ring exactly as the same lines one by one."""

from __future__ import annotations

import random

from skyward.jupyter.panel.state import LogRing

STREAMS = ("stdout", "stderr")


def batches(seed: int) -> list[list[tuple[str, str, bool]]]:
    rng = random.Random(seed)
    out = []
    for b in range(60):
        batch = []
        noisy = rng.random() < 0.4  # else plain lines: the batched path
        for i in range(rng.choice((1, 3, 50, 700))):
            stream = rng.choice(STREAMS) if rng.random() < 0.3 else "stdout"
            text = f"{b}.{i}"
            if noisy and rng.random() < 0.03:
                text = "\x1b[1A" + text  # a cursor-up, as tqdm's nested bars write
            batch.append((stream, text, noisy and rng.random() < 0.05))
        out.append(batch)
    return out


def test_batches_equal_lines_one_by_one():
    for seed in range(20):
        one, many = LogRing(limit=500), LogRing(limit=500)
        for batch in batches(seed):
            mark = "(after cell 1) " if len(batch) == 3 else ""
            for stream, text, overwrite in batch:
                one.add(stream, mark + text, overwrite)
            many.add_lines(batch, mark)
            assert many.rows == one.rows
            assert (many.first, many.total) == (one.first, one.total)
            if len(batch) == 50:
                assert many.take_changes(40) == one.take_changes(40)
        assert many.snapshot() == one.snapshot()
        assert many.take_changes() == one.take_changes()
