"""Named operand slots of the TFLite LSTM ops (as TFLite Micro's lstm_shared.h names them)."""
from __future__ import annotations

from enum import IntEnum


class LstmSlot(IntEnum):
    """Inputs of UNIDIRECTIONAL_SEQUENCE_LSTM and LSTM (full kernel), in TFLite order."""
    INPUT = 0
    INPUT_TO_INPUT_WEIGHTS = 1          # optional: absent = CIFG (i = 1 - f)
    INPUT_TO_FORGET_WEIGHTS = 2
    INPUT_TO_CELL_WEIGHTS = 3
    INPUT_TO_OUTPUT_WEIGHTS = 4
    RECURRENT_TO_INPUT_WEIGHTS = 5      # optional (CIFG)
    RECURRENT_TO_FORGET_WEIGHTS = 6
    RECURRENT_TO_CELL_WEIGHTS = 7
    RECURRENT_TO_OUTPUT_WEIGHTS = 8
    CELL_TO_INPUT_WEIGHTS = 9           # peephole, optional (absent with CIFG)
    CELL_TO_FORGET_WEIGHTS = 10         # peephole, optional
    CELL_TO_OUTPUT_WEIGHTS = 11         # peephole, optional
    INPUT_GATE_BIAS = 12                # optional (CIFG)
    FORGET_GATE_BIAS = 13
    CELL_GATE_BIAS = 14
    OUTPUT_GATE_BIAS = 15
    PROJECTION_WEIGHTS = 16             # optional: [n_output, n_cell]
    PROJECTION_BIAS = 17                # optional
    OUTPUT_STATE = 18                   # variable tensor [n_batch, n_output]
    CELL_STATE = 19                     # variable tensor [n_batch, n_cell]
    INPUT_LAYER_NORM_COEFFICIENTS = 20  # optional (absent with CIFG)
    FORGET_LAYER_NORM_COEFFICIENTS = 21
    CELL_LAYER_NORM_COEFFICIENTS = 22
    OUTPUT_LAYER_NORM_COEFFICIENTS = 23


S = LstmSlot
# Per gate in edgeseq order i, f, c, o.
INPUT_WEIGHTS = (S.INPUT_TO_INPUT_WEIGHTS, S.INPUT_TO_FORGET_WEIGHTS, S.INPUT_TO_CELL_WEIGHTS,
                 S.INPUT_TO_OUTPUT_WEIGHTS)
RECURRENT_WEIGHTS = (S.RECURRENT_TO_INPUT_WEIGHTS, S.RECURRENT_TO_FORGET_WEIGHTS,
                     S.RECURRENT_TO_CELL_WEIGHTS, S.RECURRENT_TO_OUTPUT_WEIGHTS)
BIASES = (S.INPUT_GATE_BIAS, S.FORGET_GATE_BIAS, S.CELL_GATE_BIAS, S.OUTPUT_GATE_BIAS)
LAYER_NORMS = (S.INPUT_LAYER_NORM_COEFFICIENTS, S.FORGET_LAYER_NORM_COEFFICIENTS,
               S.CELL_LAYER_NORM_COEFFICIENTS, S.OUTPUT_LAYER_NORM_COEFFICIENTS)
# Peepholes in edgeseq order i, f, o.
PEEPHOLES = (S.CELL_TO_INPUT_WEIGHTS, S.CELL_TO_FORGET_WEIGHTS, S.CELL_TO_OUTPUT_WEIGHTS)
REQUIRED = (S.INPUT, S.INPUT_TO_FORGET_WEIGHTS, S.INPUT_TO_CELL_WEIGHTS, S.INPUT_TO_OUTPUT_WEIGHTS,
            S.RECURRENT_TO_FORGET_WEIGHTS, S.RECURRENT_TO_CELL_WEIGHTS,
            S.RECURRENT_TO_OUTPUT_WEIGHTS, S.FORGET_GATE_BIAS, S.CELL_GATE_BIAS, S.OUTPUT_GATE_BIAS)


class BidiSlot(IntEnum):
    """BIDIRECTIONAL_SEQUENCE_LSTM operands beyond the two cells' slots 1..17 (forward cell at
    its LstmSlot index, backward cell at LstmSlot index + BW_OFFSET)."""
    INPUT = 0
    FW_OUTPUT_STATE = 35
    FW_CELL_STATE = 36
    BW_OUTPUT_STATE = 37
    BW_CELL_STATE = 38
    AUX_INPUT = 39
    FW_AUX_INPUT_TO_INPUT_WEIGHTS = 40   # aux weights i, f, c, o: forward 40..43
    BW_AUX_INPUT_TO_INPUT_WEIGHTS = 44   # backward 44..47


BW_OFFSET = 17


def bidi_index(slot: LstmSlot, backward: bool) -> int:
    """Input index of one cell's slot in BIDIRECTIONAL_SEQUENCE_LSTM."""
    if slot == S.INPUT:
        return BidiSlot.INPUT
    if slot == S.OUTPUT_STATE:
        return BidiSlot.BW_OUTPUT_STATE if backward else BidiSlot.FW_OUTPUT_STATE
    if slot == S.CELL_STATE:
        return BidiSlot.BW_CELL_STATE if backward else BidiSlot.FW_CELL_STATE
    if slot > S.PROJECTION_BIAS:
        raise KeyError(f"{slot.name} has no operand in BIDIRECTIONAL_SEQUENCE_LSTM")
    return int(slot) + (BW_OFFSET if backward else 0)


def bidi_aux_index(gate: int, backward: bool) -> int:
    """Input index of an aux-input weight (gate 0..3 = i, f, c, o)."""
    base = BidiSlot.BW_AUX_INPUT_TO_INPUT_WEIGHTS if backward else BidiSlot.FW_AUX_INPUT_TO_INPUT_WEIGHTS
    return int(base) + gate
