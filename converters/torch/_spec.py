"""Bare state_dicts of a standard stack, described by a short architecture spec.

Grammar (one line, shell-friendly, mirrors how the module is written):

    SPEC   := ITEM ("+" ITEM)*
    ITEM   := KIND [":" PREFIX] ["(" OPT ("," OPT)* ")"]
    KIND   := lstm | gru | rnn | sru | linear | relu | tanh | sigmoid | softmax | log_softmax
    OPT    := NAME "=" VALUE | FLAG

e.g. "lstm(batch_first)+linear", "gru:encoder(layers=2,bidirectional)+linear:head+softmax",
"rnn(nonlinearity=relu)+linear". Options of lstm/gru/rnn: hidden, layers, proj, bidirectional,
batch_first, nonlinearity (rnn); of sru (an `sru.SRU` module's state_dict, time-major): hidden,
layers, proj, bidirectional, tanh, skip (has_skip_term, default true), rescale,
normalize_after (an SRU's tensors cannot tell one direction of 2H from two of H: say
bidirectional); of linear: out; of softmax/log_softmax: dim.

Why a grammar and not JSON: it needs no quoting in a shell, reads like the module it describes,
and almost everything is inferred anyway. Sizes (input, hidden, proj, layers, directions, bias,
linear out) come from the tensor shapes; any size given in the spec is checked against them.
What shapes cannot tell is the spec's job: the kind of each layer, batch_first, the RNN
nonlinearity and the weightless activations. Weighted items take the state_dict's parameter
groups (key prefixes) in order unless ":PREFIX" names one; a group left unused is an error.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeseq.errors import UnsupportedModelError
from edgeseq.graph import Graph, Value
from edgeseq.ops import Op

RECURRENT_KINDS = ("lstm", "gru", "rnn")
ACTIVATIONS = {"relu": Op.RELU, "tanh": Op.TANH, "sigmoid": Op.SIGMOID}
KINDS = RECURRENT_KINDS + ("sru", "linear", "softmax", "log_softmax") + tuple(ACTIVATIONS)
_OPTIONS = {
    **{k: {"hidden", "layers", "proj", "bidirectional", "batch_first", "nonlinearity"}
       for k in RECURRENT_KINDS},
    "sru": {"hidden", "layers", "proj", "bidirectional", "tanh", "skip", "rescale",
            "normalize_after"},
    "linear": {"out"}, "softmax": {"dim"}, "log_softmax": {"dim"},
    **{k: set() for k in ACTIVATIONS},
}
_ITEM = re.compile(r"^\s*([a-z_][a-z0-9_]*)\s*(?::\s*([A-Za-z0-9_.]+))?\s*(?:\((.*)\))?\s*$")
_RNN_KEY = re.compile(r"^(?:(.*)\.)?(weight|bias)_(ih|hh|hr)_l(\d+)(_reverse)?$")
_LIN_KEY = re.compile(r"^(?:(.*)\.)?(weight|bias)$")
# an sru.SRU module: rnn_lst.<layer>.<parameter>, and the optional input_to_hidden Linear
_SRU_KEY = re.compile(r"^(?:(.*)\.)?(?:rnn_lst\.\d+\.(?:weight|weight_c|bias|scale_x|weight_proj|"
                      r"layer_norm\.weight|layer_norm\.bias)|input_to_hidden\.weight)$")


@dataclass
class Item:
    kind: str
    prefix: str | None
    opts: dict = field(default_factory=dict)


def parse(spec: str) -> list[Item]:
    """Parse a SPEC string; errors name the offending part."""
    items = []
    for part in _split_top(spec):
        m = _ITEM.match(part)
        if not m:
            raise UnsupportedModelError(f"arch spec: cannot parse '{part}' (expected KIND[:PREFIX]"
                                        f"[(opt,...)], e.g. 'lstm(batch_first)')")
        kind, prefix, body = m.group(1), m.group(2), m.group(3)
        if kind not in KINDS:
            raise UnsupportedModelError(f"arch spec: unknown layer kind '{kind}'; known: {list(KINDS)}")
        opts: dict = {}
        for opt in filter(None, (o.strip() for o in (body or "").split(","))):
            key, _, val = opt.partition("=")
            key = key.strip()
            if key not in _OPTIONS[kind]:
                raise UnsupportedModelError(f"arch spec: '{kind}' has no option '{key}'; "
                                            f"options: {sorted(_OPTIONS[kind]) or 'none'}")
            opts[key] = _value(val.strip()) if _ else True
        items.append(Item(kind, prefix, opts))
    if not items:
        raise UnsupportedModelError("arch spec is empty")
    return items


def _split_top(spec: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in spec:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "+" and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [p for p in parts + [cur] if p.strip()]


def _value(v: str):
    if v.lower() in ("true", "false"):
        return v.lower() == "true"
    try:
        return int(v)
    except ValueError:
        return v


# ---- loading --------------------------------------------------------------------------------
def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """{key: float32 array} from .safetensors (no torch needed) or a torch .pt/.pth file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file
        try:
            raw = load_file(str(path))
        except SafetensorError as e:   # truncated or not safetensors at all
            raise UnsupportedModelError(f"{path}: not a readable .safetensors state_dict: "
                                        f"{e}") from e
    else:
        from edgeseq.converters.torch import require_torch
        torch = require_torch()
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:
            # NOTE: torch's weights_only message spans many lines; the CLI prints one
            raise UnsupportedModelError(f"{path}: not a loadable state_dict: "
                                        f"{' '.join(str(e).split())}") from e
        for wrapper in ("state_dict", "model_state_dict", "model"):
            # training checkpoints often nest the weights next to optimizer state, epoch, ...
            if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
        if not isinstance(obj, dict):
            raise UnsupportedModelError(f"{path}: holds a {type(obj).__name__}, not a state_dict")
        raw = {k: v.detach().cpu().numpy() for k, v in obj.items() if hasattr(v, "detach")}
    return {k: np.asarray(v, dtype=np.float32) for k, v in raw.items()}


def _groups(sd: dict) -> dict[str, dict]:
    """Parameters by module prefix, in key order: {prefix: {"kind": rnn|linear, "keys": ...}}."""
    out: dict[str, dict] = {}
    for key in sd:
        m = _RNN_KEY.match(key) or _SRU_KEY.match(key)
        kind = ("sru" if m.re is _SRU_KEY else "rnn") if m else \
            "linear" if _LIN_KEY.match(key) else None
        if kind is None:
            raise UnsupportedModelError(f"state_dict key '{key}' is neither a recurrent "
                                        f"(weight_ih_l0, ...) nor a linear (weight/bias) parameter")
        prefix = (m or _LIN_KEY.match(key)).group(1) or ""
        g = out.setdefault(prefix, {"kind": kind, "keys": []})
        if g["kind"] != kind:
            raise UnsupportedModelError(f"state_dict prefix '{prefix}' mixes recurrent and "
                                        f"linear parameters")
        g["keys"].append(key)
    return out


# ---- building -------------------------------------------------------------------------------
def build_from_state_dict(sd: dict[str, np.ndarray], spec: str, *, name: str = "model") -> Graph:
    """A validated Graph for the stack `spec` with the weights of `sd`."""
    from edgeseq.converters.torch._lowering import Emitter
    from edgeseq.converters.torch._sru import sru_from_state_dict, sru_input_size
    items = parse(spec)
    groups = _groups(sd)
    unused = list(groups)
    cx = Emitter(name)
    x = None
    rec = [i for i in items if i.kind in RECURRENT_KINDS + ("sru",)]
    batch_first = bool(rec[0].opts.get("batch_first", False)) if rec else True
    for i in rec[1:]:
        if bool(i.opts.get("batch_first", False)) != batch_first:
            raise UnsupportedModelError(f"arch spec '{spec}': recurrent layers differ in "
                                        f"batch_first; mixed layouts need a transpose the spec "
                                        f"cannot express")
    for k, item in enumerate(items):
        where = f"arch spec item {k + 1} '{item.kind}'"
        if item.kind in RECURRENT_KINDS + ("linear", "sru"):
            want = "rnn" if item.kind in RECURRENT_KINDS else item.kind
            prefix = item.prefix if item.prefix is not None else \
                next((p for p in unused if groups[p]["kind"] == want), None)
            if prefix is None or prefix not in groups:
                raise UnsupportedModelError(
                    f"{where}: no {'unused ' if item.prefix is None else ''}{want} parameter group"
                    f"{'' if item.prefix is None else ' ' + repr(item.prefix)} in the state_dict; "
                    f"groups: {list(groups)}")
            if groups[prefix]["kind"] != want or prefix not in unused:
                raise UnsupportedModelError(f"{where}: group '{prefix}' is "
                                            f"{'already used' if prefix not in unused else 'not ' + want}")
            unused.remove(prefix)
            params = {key[len(prefix) + 1:] if prefix else key: sd[key]
                      for key in groups[prefix]["keys"]}
            if x is None:     # the graph input takes the first layer's input size
                n_in = sru_input_size(params) if want == "sru" else \
                    params["weight_ih_l0" if want == "rnn" else "weight"].shape[1]
                x = cx.input("x", (2, 3, n_in))
            if want == "sru":
                x = sru_from_state_dict(cx, item.opts, params, x, where, base=item.prefix or "sru")
            elif want == "rnn":
                x = _recurrent(cx, item, params, x, where)
            else:
                x = _linear(cx, item, params, x, where)
        elif item.kind in ACTIVATIONS:
            x = _need(x, where)
            x = cx.emit1(ACTIVATIONS[item.kind], [x], item.kind, x.shape)
        else:
            x = _need(x, where)
            op = Op.SOFTMAX if item.kind == "softmax" else Op.LOG_SOFTMAX
            x = cx.emit1(op, [x], item.kind, x.shape, axis=int(item.opts.get("dim", -1)))
    if x is None:
        raise UnsupportedModelError(f"arch spec '{spec}' has no layer with weights")
    if unused:
        raise UnsupportedModelError(f"arch spec '{spec}' leaves state_dict group(s) {unused} "
                                    f"unused; describe every layer")
    g = cx.finish([x])
    v = g.inputs[0]
    g.inputs = [Value(v.name, v.dtype, ("N", "T", v.shape[2]) if batch_first
                      else ("T", "N", v.shape[2]))]
    g.metadata["arch"] = spec
    return g.validate()


def _need(x, where):
    if x is None:
        raise UnsupportedModelError(f"{where}: an activation cannot come before the first layer")
    return x


def _check(item: Item, key: str, got, where: str) -> None:
    if key in item.opts and item.opts[key] != got:
        raise UnsupportedModelError(f"{where}: spec says {key}={item.opts[key]} but the "
                                    f"weights have {key}={got}")


def _recurrent(cx, item: Item, p: dict, x, where: str):
    from edgeseq.converters.torch._recurrent import GATES, Stack, build_stack
    kind = item.kind
    if kind == "rnn":
        nl = item.opts.get("nonlinearity", "tanh")
        if nl not in ("tanh", "relu"):
            raise UnsupportedModelError(f"{where}: nonlinearity must be tanh or relu, got {nl}")
        kind = f"rnn_{nl}"
    layers = 1 + max(int(_RNN_KEY.match(k).group(4)) for k in p)
    bidir = any(k.endswith("_reverse") for k in p)
    rows, cols = p["weight_ih_l0"].shape[0], p["weight_hh_l0"].shape[1]
    hidden = rows // GATES[kind]
    proj = p["weight_hr_l0"].shape[0] if "weight_hr_l0" in p else 0
    if rows % GATES[kind] or cols != (proj or hidden) or (proj and kind != "lstm"):
        raise UnsupportedModelError(
            f"{where}: these weights are not a {item.kind.upper()} (weight_ih_l0 has {rows} rows, "
            f"weight_hh_l0 {cols} columns; a {item.kind.upper()} has {GATES[kind]} gates)")
    for key, got in (("layers", layers), ("bidirectional", bidir), ("hidden", hidden),
                     ("proj", proj)):
        _check(item, key, got, where)
    stack = Stack(kind, layers, bidir, bool(item.opts.get("batch_first", False)))
    has_b = "bias_ih_l0" in p
    per_layer = []
    for li in range(layers):
        dirs = []
        for sfx in ("", "_reverse")[:stack.dirs]:
            d = {}
            for short, key in (("w_ih", "weight_ih"), ("w_hh", "weight_hh"), ("b_ih", "bias_ih"),
                               ("b_hh", "bias_hh"), ("w_hr", "weight_hr")):
                full = f"{key}_l{li}{sfx}"
                if full in p:
                    d[short] = p[full]
                elif short in ("w_ih", "w_hh") or (short.startswith("b") and has_b) or \
                        (short == "w_hr" and proj):
                    raise UnsupportedModelError(f"{where}: missing parameter '{full}'")
            dirs.append(d)
        per_layer.append(dirs)
    want_in = x.shape[-1]
    got_in = per_layer[0][0]["w_ih"].shape[1]
    if want_in != got_in:
        raise UnsupportedModelError(f"{where}: input size {got_in} but the previous layer gives "
                                    f"{want_in}")
    y, _, _ = build_stack(cx, stack, x, per_layer, hidden, need_h=False, need_c=False,
                          base=item.prefix or item.kind)
    return y


def _linear(cx, item: Item, p: dict, x, where: str):
    w = p.get("weight")
    if w is None or w.ndim != 2:
        raise UnsupportedModelError(f"{where}: linear needs a 2-D 'weight'")
    _check(item, "out", w.shape[0], where)
    if x.shape[-1] != w.shape[1]:
        raise UnsupportedModelError(f"{where}: linear expects {w.shape[1]} inputs but the previous "
                                    f"layer gives {x.shape[-1]}")
    shp = x.shape[:-1] + (w.shape[0],)
    y = cx.emit1(Op.MATMUL, [x, np.ascontiguousarray(w.T)], item.prefix or "linear", shp)
    if "bias" in p:
        y = cx.emit1(Op.ADD, [y, p["bias"]], (item.prefix or "linear") + "_bias", shp)
    return y
