"""A Reshape that only moves axes of size 1 is a Transpose (Keras writes [1, T, I] ->
[T, 1, I] around its recurrent loops when the batch is 1). Converters emit it as one, so that
the time axis can be followed through it: a stream can run such a graph chunk by chunk, which
a Reshape with the length written in its shape cannot."""
from __future__ import annotations

from edgeseq.ops import Op

UNIT_OPS = {"unsqueeze": Op.UNSQUEEZE, "squeeze": Op.SQUEEZE}


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


def unit_axes_change(src, dst) -> tuple[str, tuple[int, ...]] | None:
    """("unsqueeze", axes) when reshaping `src` to `dst` only inserts size-1 axes,
    ("squeeze", axes) when it only removes them, else None (or a dim is not a known
    integer). Converters emit Unsqueeze/Squeeze instead: exact at any length, so a graph
    exported at a fixed length still streams through it (Keras' Conv1D writes
    [N, T, C] -> [N, 1, T, C] with T as a literal)."""
    src, dst = list(src or ()), list(dst or ())
    if len(src) == len(dst) or not all(isinstance(d, int) and d > 0 for d in src + dst):
        return None
    longer, shorter, kind = (dst, src, "unsqueeze") if len(dst) > len(src) else \
        (src, dst, "squeeze")
    axes, i = [], 0
    for j, d in enumerate(longer):
        if i < len(shorter) and shorter[i] == d:
            i += 1
        elif d == 1:
            axes.append(j)
        else:
            return None
    return (kind, tuple(axes)) if i == len(shorter) else None
