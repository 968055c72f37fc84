"""The vocabulary of eventsim's compiled node table: node kinds, columns and the constants the
kernels and their callers share.

Free of numba, so that :mod:`targets.eventsim.layout` and :mod:`targets.eventsim.driver` import
without the compiler (a process that runs the kernels compiled ahead of time never loads it,
:mod:`targets.eventsim.aot`); :mod:`targets.eventsim.kernels` reads the table by these names.
"""

from __future__ import annotations

from core import fixed

DECAY_UNITY, DECAY_SHIFT, ACT_SHIFT, VTH_SHIFT, V_MAX, U_WRAP = (fixed.DECAY_UNITY, fixed.DECAY_SHIFT, fixed.ACT_SHIFT,
                                                             fixed.VTH_SHIFT, fixed.V_MAX, fixed.U_WRAP)  # fmt: skip

# node kinds in the compiled table
INPUT, CONV, AFFINE, SUMPOOL, AVGPOOL, FLATTEN, LIF, LI, DELAY = range(9)
# columns of the node table
(K_KIND, K_N, K_SRC, K_NSRC, K_CI, K_HI, K_WI, K_CO, K_HO, K_WO, K_KH, K_KW, K_SH, K_SW, K_PH, K_PW, K_WOFF,
 K_BOFF, K_POFF, K_EXP, K_VTH, K_DV, K_DENSE, K_OFF, K_GROUPS, K_LIF, K_ROFF, K_FUSED, K_UNIFORM,
 K_MAP, K_TOFF, K_DOFF, K_DSLOT, K_DDEPTH, K_FORM, K_SPIKE, K_WIN) = range(37)  # fmt: skip
NCOLS = 37
DENSE_FRACTION = 0.25
BLOCK_RUN = 64  # consecutive blocks of a blocked LIF updated in one call at most
# a float LIF/LI layer's rule beyond NIR's (a producer's dialect, targets.reference.membrane): the
# membrane's form (K_FORM; the plan's parameters in the beta and leak slots, see layout) and the
# spikes per step (K_SPIKE). Layers with a rule run in _rule_lif / _rule_li, never densely fused.
FORM_NIR, FORM_NORSE_BOX, FORM_NORSE_CELL, FORM_NORSE_JUMP, FORM_ROCKPOOL_SYN, FORM_NIR_REST = range(6)
# fixed precision, a current-based neuron (core.fixed.current_step): its current, and the LIF/LI
# behind it, whose input is that current (unshifted); both run listed in _fixed_current_layer
FORM_FIXED_CURRENT, FORM_FIXED_MEMBRANE = 6, 7
SPIKE_ONE, SPIKE_FLOOR_GE, SPIKE_TRUNC_GT0 = range(3)
MAX_SPIKES = 255  # several spikes per step: rasters hold counts up to this (targets.reference)
SCAN = 32  # input values tested at once for any non-zero (one vector compare)
X_CLAMP = 2**24  # |input| beyond which the membrane saturates whatever its state (narrow path)
