"""`sru.SRU` / `sru.SRUCell` (the `sru` package, 2.x) -> SRU nodes, one per layer.

The package's forward on CPU is a custom C++ op (or, with gradients on, a Python loop), which
torch.export cannot lower; the module's parameters and options say everything, so the module
is read directly (`from_module` dispatches here) and a bare state_dict is read with an arch
spec item `sru(...)` (`_spec.py`). Both go through `build_sru`.

Parameter layout of one package layer (SRUCell), D directions, H hidden, k = 3 or 4 matrices:
  weight   [I', D*H*k]  column (d*H + j)*k + m; m = 0: W (c~), 1: W_f, 2: W_r, 3: W_s (skip)
  weight_proj [I, I']   optional input projection (projection_size), x' = x @ weight_proj
  weight_c [2*D*H]      (f, r) x (d, j): the cell weights v (all zero, frozen, when v1)
  bias     [2*D*H]      (f, r) x (d, j)
  scale_x  [1]          highway scale, used when rescale and k == 3
  layer_norm.weight/bias  nn.LayerNorm over I ("before") or D*H (normalize_after)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeseq.errors import UnsupportedModelError
from edgeseq.graph import Graph, Value
from edgeseq.ops import Op


@dataclass(frozen=True)
class SruConfig:
    """What the parameters of a package SRU cannot tell."""
    hidden_size: int
    bidirectional: bool = False
    use_tanh: bool = False
    has_skip_term: bool = True
    rescale: bool = False
    normalize_after: bool = False
    layer_norm_eps: float = 1e-5

    @property
    def dirs(self) -> int:
        return 2 if self.bidirectional else 1


def is_sru_module(module) -> bool:
    """An `sru.SRU` or `sru.SRUCell` (checked by class path: sru stays an optional import)."""
    return any(c.__module__.split(".")[0] == "sru" and c.__name__ in ("SRU", "SRUCell")
               for c in type(module).__mro__)


def layer_weights(cx, p: dict[str, np.ndarray], cfg: SruConfig, n_in: int, where: str
                  ) -> tuple[dict[str, str], dict]:
    """IR weight slots (slot -> constant name) and attributes of one layer from its
    package parameters `p` (numpy, keys as in SRUCell.state_dict())."""
    d, h = cfg.dirs, cfg.hidden_size
    w = np.asarray(p["weight"], np.float64)
    proj = p.get("weight_proj")
    i_gemm = n_in if proj is None else proj.shape[1]
    if proj is not None and proj.shape != (n_in, i_gemm):
        raise UnsupportedModelError(f"{where}: weight_proj is {proj.shape}, expected "
                                    f"({n_in}, P)")
    k, rem = divmod(w.shape[1], d * h) if w.ndim == 2 else (0, 1)
    if w.ndim != 2 or w.shape[0] != i_gemm or rem or k not in (3, 4):
        raise UnsupportedModelError(f"{where}: weight is {w.shape}; an SRU layer with input "
                                    f"{i_gemm}, {d} direction(s) x hidden {h} has "
                                    f"({i_gemm}, {d * h} x 3 or 4)")
    for key in ("weight_c", "bias"):
        if np.shape(p.get(key)) != (2 * d * h,):
            raise UnsupportedModelError(f"{where}: {key} must have {2 * d * h} values, got "
                                        f"{np.shape(p.get(key))}")
    if k == 4 and not cfg.has_skip_term:
        raise UnsupportedModelError(f"{where}: 4 matrices (a projected skip) but "
                                    f"has_skip_term is off")
    if k == 3 and cfg.has_skip_term and n_in != d * h:
        raise UnsupportedModelError(f"{where}: 3 matrices with a skip term need input size "
                                    f"{d * h}, got {n_in}")
    # [I', D, H, k] -> [D, k, H, I'] -> [D, k*H, I'] (gate-major rows, as the IR slot)
    w_x = w.reshape(i_gemm, d, h, k).transpose(1, 3, 2, 0).reshape(d, k * h, i_gemm)
    slots = {"w_x": cx.const(w_x, "sru_w_x")}
    if proj is not None:
        slots["w_x_proj"] = cx.const(np.asarray(proj).T[None], "sru_w_x_proj")
    v = np.asarray(p["weight_c"]).reshape(2, d, h).transpose(1, 0, 2)
    if np.any(v):       # the v1 form keeps weight_c at zero: the slot is left out
        slots["v"] = cx.const(v, "sru_v")
    slots["b"] = cx.const(np.asarray(p["bias"]).reshape(2, d, h).transpose(1, 0, 2), "sru_b")
    skip = "none" if not cfg.has_skip_term else ("projected" if k == 4 else "input")
    scale = float(np.asarray(p["scale_x"]).reshape(-1)[0]) \
        if skip == "input" and cfg.rescale and "scale_x" in p else 1.0
    ln = "none"
    if "layer_norm.weight" in p:
        ln = "after" if cfg.normalize_after else "before"
        feat = d * h if ln == "after" else n_in
        if np.shape(p["layer_norm.weight"]) != (feat,):
            raise UnsupportedModelError(f"{where}: layer_norm.weight is "
                                        f"{np.shape(p['layer_norm.weight'])}, expected ({feat},) "
                                        f"for layer_norm {ln}")
        slots["ln_gain"] = cx.const(p["layer_norm.weight"], "sru_ln_gain")
        if "layer_norm.bias" in p:
            slots["ln_bias"] = cx.const(p["layer_norm.bias"], "sru_ln_bias")
    attrs = {"hidden_size": h, "direction": "bidirectional" if d == 2 else "forward",
             "activations": ("tanh" if cfg.use_tanh else "affine",) * d, "skip": skip,
             "skip_scale": scale, "layer_norm": ln, "layer_norm_epsilon": cfg.layer_norm_eps}
    return slots, attrs


def build_sru(cx, x, layers: list[dict], cfg: SruConfig, *, c0=None, final_state: bool = False,
              base: str = "sru"):
    """Emit the layers on IR value x [T, N, I]; c0: an IR value [L, N, D*H] or None.
    Returns (y [T, N, D*H], c [L, N, D*H] or None)."""
    from edgeseq.converters.torch._lowering import V
    d, h = cfg.dirs, cfg.hidden_size
    t, n = x.shape[:2]
    finals = []
    for li, p in enumerate(layers):
        where = f"SRU layer {li}"
        slots, attrs = layer_weights(cx, p, cfg, x.shape[-1], where)
        init = None
        if c0 is not None:       # c0[li]: [1, N, D*H] -> [N, D, H] -> [D, N, H]
            row = cx.emit1(Op.SLICE, [c0], f"{base}{li}_c0", (1, n, d * h), starts=(li,),
                           ends=(li + 1,), axes=(0,), steps=(1,))
            row = cx.emit1(Op.RESHAPE, [row], f"{base}{li}_c0_split", (n, d, h),
                           shape=(-1, d, h))
            init = cx.emit1(Op.TRANSPOSE, [row], f"{base}{li}_c0_dnh", (d, n, h),
                            perm=(1, 0, 2))
        y, c = cx.emit(Op.SRU, [x, None, init], f"{base}{li}", [(t, n, d * h), (d, n, h)],
                       attrs, slots)
        x = y
        if final_state:
            c = cx.emit1(Op.TRANSPOSE, [c], f"{base}{li}_c_ndh", (n, d, h), perm=(1, 0, 2))
            c = cx.emit1(Op.RESHAPE, [c], f"{base}{li}_c_flat", (n, d * h), shape=(0, -1))
            finals.append(cx.emit1(Op.UNSQUEEZE, [c], f"{base}{li}_c_layer", (1, n, d * h),
                                   axes=(0,)))
    if not final_state:
        return x, None
    if len(finals) == 1:
        return x, finals[0]
    c = cx.emit1(Op.CONCAT, finals, f"{base}_c", (len(finals), n, d * h), axis=0)
    return x, c


def _module_config(module) -> SruConfig:
    cell = module.rnn_lst[0] if hasattr(module, "rnn_lst") else module
    ln = cell.layer_norm
    return SruConfig(hidden_size=int(cell.hidden_size), bidirectional=bool(cell.bidirectional),
                     use_tanh=cell.activation_type == 1, has_skip_term=bool(cell.has_skip_term),
                     rescale=bool(cell.rescale), normalize_after=bool(cell.normalize_after),
                     layer_norm_eps=float(ln.eps) if ln is not None else 1e-5)


def _numpy_params(module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def convert_module(module, example_inputs, *, name: str | None = None,
                   final_state: bool = True) -> Graph:
    """A validated Graph for an `sru.SRU` (inputs x [T, N, I] and, when the example passes
    one, c0 [L, N, D*H]; outputs the output and, with `final_state`, c [L, N, D*H]) or an
    `sru.SRUCell` (the same with one layer: c0/c [N, D*H])."""
    from edgeseq.converters.torch._lowering import Emitter
    args = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) \
        else (example_inputs,)
    cells = list(module.rnn_lst) if hasattr(module, "rnn_lst") else [module]
    is_cell = not hasattr(module, "rnn_lst")
    for k, cell in enumerate(cells):
        if cell.custom_m is not None:
            raise UnsupportedModelError(f"SRU layer {k}: a custom_m module computes U; only the "
                                        f"built-in weight (and weight_proj) can be converted")
        if cell.activation_type not in (0, 1):
            raise UnsupportedModelError(f"SRU layer {k}: activation_type "
                                        f"{cell.activation_type} (only identity or tanh)")
    if len(args) > 2 or (len(args) == 2 and args[1] is None) or len(args) == 0:
        raise UnsupportedModelError("SRU example_inputs: (x,) or (x, c0); mask_pad is not "
                                    "supported (use sequence lengths on the IR node instead)")
    cfg = _module_config(module)
    d, h = cfg.dirs, cfg.hidden_size
    x_ex = args[0]
    if x_ex.dim() != 3:
        raise UnsupportedModelError(f"SRU input must be (length, batch, input), got "
                                    f"{tuple(x_ex.shape)}")
    cx = Emitter(name or type(module).__name__)
    x = cx.input("x", tuple(x_ex.shape))
    c0 = None
    if len(args) == 2:
        want = (x_ex.shape[1], d * h) if is_cell else (len(cells), x_ex.shape[1], d * h)
        if tuple(args[1].shape) != want:
            raise UnsupportedModelError(f"SRU c0 must be {want}, got {tuple(args[1].shape)}")
        c0 = cx.input("c0", want)
        if is_cell:
            c0 = cx.emit1(Op.UNSQUEEZE, [c0], "sru_c0_layer", (1,) + want, axes=(0,))
    if getattr(module, "input_to_hidden", None) is not None:
        w = module.input_to_hidden.weight.detach().cpu().numpy()
        x = cx.emit1(Op.MATMUL, [x, np.ascontiguousarray(w.T)], "input_to_hidden",
                     x.shape[:2] + (w.shape[0],))
    layers = [_numpy_params(c) for c in cells]
    y, c = build_sru(cx, x, layers, cfg, c0=c0, final_state=final_state)
    if c is not None and is_cell:
        c = cx.emit1(Op.SQUEEZE, [c], "sru_c_cell", c.shape[1:], axes=(0,))
    elif c is not None and getattr(module, "nn_rnn_compatible_return", False):
        n = c.shape[1]
        c = cx.emit1(Op.RESHAPE, [c], "sru_c_split", (len(cells), n, d, h), shape=(0, 0, d, h))
        c = cx.emit1(Op.TRANSPOSE, [c], "sru_c_ldnh", (len(cells), d, n, h), perm=(0, 2, 1, 3))
        c = cx.emit1(Op.RESHAPE, [c], "sru_c_rnn", (len(cells) * d, n, h),
                     shape=(len(cells) * d, -1, h))
    g = cx.finish([y] if c is None else [y, c])
    # the sequence and batch axes of x (and the batch axis of c0) are free
    g.inputs = [Value(v.name, v.dtype, ("T", "N", v.shape[2]) if v.name == "x" else
                      ("N", v.shape[1]) if is_cell else (v.shape[0], "N", v.shape[2]))
                for v in g.inputs]
    return g.validate()


# ---- a bare state_dict (arch spec item "sru(...)", _spec.py) ----------------------------------
def sru_input_size(p: dict[str, np.ndarray]) -> int:
    """The input size of an sru.SRU state_dict (keys relative to the module)."""
    if "input_to_hidden.weight" in p:
        return int(p["input_to_hidden.weight"].shape[1])
    if "rnn_lst.0.weight_proj" in p:
        return int(p["rnn_lst.0.weight_proj"].shape[0])
    if "rnn_lst.0.weight" not in p:
        raise UnsupportedModelError("sru state_dict: no 'rnn_lst.0.weight'")
    return int(p["rnn_lst.0.weight"].shape[0])


def sru_from_state_dict(cx, opts: dict, p: dict[str, np.ndarray], x, where: str, *,
                        base: str = "sru"):
    """Emit the layers of an sru.SRU state_dict on x; `opts` are the spec item's options
    (what the tensors cannot tell: bidirectional, tanh, skip, rescale, normalize_after)."""
    layers = 1 + max(int(k.split(".")[1]) for k in p if k.startswith("rnn_lst."))
    per = [{k[len(f"rnn_lst.{li}."):]: v for k, v in p.items()
            if k.startswith(f"rnn_lst.{li}.")} for li in range(layers)]
    for li, q in enumerate(per):
        for key in ("weight", "weight_c", "bias"):
            if key not in q:
                raise UnsupportedModelError(f"{where}: missing parameter 'rnn_lst.{li}.{key}'")
    bidi = bool(opts.get("bidirectional", False))
    d = 2 if bidi else 1
    d_h = int(np.shape(per[0]["weight_c"])[0]) // 2
    hidden = d_h // d
    if d_h % d or hidden == 0:
        raise UnsupportedModelError(f"{where}: weight_c has {2 * d_h} values; not 2 x "
                                    f"{d} direction(s) x hidden")
    proj = int(per[0]["weight_proj"].shape[1]) if "weight_proj" in per[0] else 0
    for key, got in (("hidden", hidden), ("layers", layers), ("proj", proj)):
        if key in opts and opts[key] != got:
            raise UnsupportedModelError(f"{where}: spec says {key}={opts[key]} but the weights "
                                        f"have {key}={got}")
    cfg = SruConfig(hidden_size=hidden, bidirectional=bidi, use_tanh=bool(opts.get("tanh")),
                    has_skip_term=bool(opts.get("skip", True)),
                    rescale=bool(opts.get("rescale", False)),
                    normalize_after=bool(opts.get("normalize_after", False)))
    if "input_to_hidden.weight" in p:
        w = p["input_to_hidden.weight"]
        x = cx.emit1(Op.MATMUL, [x, np.ascontiguousarray(w.T)], f"{base}_input_to_hidden",
                     x.shape[:-1] + (w.shape[0],))
    y, _ = build_sru(cx, x, per, cfg, base=base)
    return y
