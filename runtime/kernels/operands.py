"""Named slots of the packed cell operands, one table for every recurrent cell kernel and for
the kernel families that build the packs (runtime/recurrent.py).

A call passes a cell's scalar operands as two small arrays, because Numba's dispatch cost
grows with the argument count (measured: two arrays 0.20 us a call, one structured record
0.46 us, a namedtuple 3.2 us): `ip` (int64: flags, activation codes) and `fp` (float64: clips,
epsilon, activation alpha/beta). Kernels index them only through these names, which Numba
folds to constants (`ip[LSTM_REVERSE]` compiles to what `ip[7]` did). Activation codes are
`edgeseq.ops.ACT_CODES`.

The short-chunk streaming entries (`_lstm_stream`, `_gru_stream`, `_rnn_stream`) read the cell's
ip followed by the `STREAM_*` slots, at `ip[<cell>_N_IP + STREAM_...]`.
"""
from __future__ import annotations

# ---- LSTM: ip ----------------------------------------------------------------------------
LSTM_PEEPHOLE = 0
LSTM_COUPLING = 1           # 0 none, 1 i = 1 - f, 2 f = 1 - i
LSTM_LAYER_NORM = 2
LSTM_PROJECTION = 3
LSTM_ACT_F = 4              # the gates' activation (i, f, o)
LSTM_ACT_G = 5              # the cell input's
LSTM_ACT_H = 6              # the output's
LSTM_REVERSE = 7
LSTM_N_IP = 8
# ---- LSTM: fp ----------------------------------------------------------------------------
LSTM_CELL_CLIP = 0          # <= 0: no clip (likewise every *_CLIP)
LSTM_PROJ_CLIP = 1
LSTM_GATE_CLIP = 2
LSTM_LN_EPS = 3
LSTM_ALPHA_F = 4
LSTM_BETA_F = 5
LSTM_ALPHA_G = 6
LSTM_BETA_G = 7
LSTM_ALPHA_H = 8
LSTM_BETA_H = 9
LSTM_N_FP = 10

# ---- GRU: ip -----------------------------------------------------------------------------
GRU_LINEAR_BEFORE_RESET = 0
GRU_ACT_F = 1               # z and r
GRU_ACT_G = 2               # the candidate h
GRU_REVERSE = 3
GRU_N_IP = 4
# ---- GRU: fp -----------------------------------------------------------------------------
GRU_GATE_CLIP = 0
GRU_ALPHA_F = 1
GRU_BETA_F = 2
GRU_ALPHA_G = 3
GRU_BETA_G = 4
GRU_N_FP = 5

# ---- RNN: ip -----------------------------------------------------------------------------
RNN_ACT = 0
RNN_REVERSE = 1
RNN_N_IP = 2
# ---- RNN: fp -----------------------------------------------------------------------------
RNN_GATE_CLIP = 0
RNN_ALPHA = 1
RNN_BETA = 2
RNN_N_FP = 3

# ---- streaming entries: after the cell's ip ------------------------------------------------
STREAM_N_INPUT = 0
STREAM_N_CELL = 1           # hidden size
STREAM_N_OUT = 2            # output size (projection) or hidden size
STREAM_OFF_W_X = 3          # offsets into the packed weight buffer
STREAM_OFF_W_H = 4          # GRU: the z, r rows
STREAM_OFF_W_3 = 5          # LSTM: the projection; GRU: the h rows; RNN: unused
STREAM_OFF_AUX = 6
STREAM_AUX_WIDTH = 7
STREAM_CHECK_FINITE = 8
STREAM_N_IP = 9
