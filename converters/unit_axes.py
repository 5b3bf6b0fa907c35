"""A Reshape that only moves axes of size 1 is a Transpose (Keras writes [1, T, I] ->
[T, 1, I] around its recurrent loops when the batch is 1). Converters emit it as one, so that
the time axis can be followed through it: a stream can run such a graph chunk by chunk, which
a Reshape with the length written in its shape cannot."""
from __future__ import annotations


def unit_move_perm(src, dst) -> tuple[int, ...] | None:
    """The Transpose perm equal to reshaping `src` to `dst`, or None when the reshape does
    more than move size-1 axes (or a dim is not a known integer)."""
    src, dst = list(src or ()), list(dst or ())
    if len(src) != len(dst) or not all(isinstance(d, int) and d > 0 for d in src + dst):
        return None
    ps = [i for i, d in enumerate(src) if d != 1]
    pd = [j for j, d in enumerate(dst) if d != 1]
    if [src[i] for i in ps] != [dst[j] for j in pd] or ps == pd:
        return None
    units = iter(i for i, d in enumerate(src) if d == 1)
    moved = dict(zip(pd, ps))
    return tuple(moved[j] if j in moved else next(units) for j in range(len(dst)))
