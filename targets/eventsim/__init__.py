"""The ``eventsim`` target: the project's own event-driven CPU simulator (numba kernels).

Work is done per event, never as a dense product over all inputs every step:

- an input spike (or a spike count, a pooled count, a current) is an *event* ``(neuron, value)``;
  a synaptic node scatters each event's outgoing weights into its targets' accumulators (a weight
  row for an affine layer, the kernel window for a convolution, the pooling cell for pooling) and
  remembers which output pixels it touched;
- a LIF layer updates only the neurons that have state (``v != 0``) or received input this step,
  kept in an *active list*; a neuron at rest with no input costs nothing. Layers whose neurons get
  input at every step regardless (a non-zero bias or leak) are updated densely: that is the
  semantics, not a shortcut. A LIF layer fed only by a convolution lists *blocks* instead (an
  output pixel's channels, which every event reaching the pixel reaches together), updated with
  the dense update's vectorised loop straight from the convolution's accumulators.

- an LI layer (non-spiking leaky integrator) is listed the same way: a neuron with a non-zero
  membrane, input or a constant input is updated, and each non-zero membrane is passed on as an
  event carrying its value (the next node sees analog values: float64 accumulators then); a listed
  membrane that decays to 0 (fixed precision truncates; float halves toward 0) leaves the list, so
  an LI readout's cost follows events too. Its own compiled loop keeps the LIF kernels untouched.
  The graph output of an LI readout is a float64 score per class (each step's float32 output added
  in step order, as the reference), integers in fixed precision.

Both precisions follow :mod:`targets.reference` operation for operation (bit-exact in fixed
precision). The whole simulation (every sample, step and node) is one compiled function, free of
Python objects; :class:`EventSim` prepares its flat arrays once per plan, and
:meth:`EventSim.stream` keeps neuron state across calls for streaming at batch size 1.

Modules, each importing only the ones after it:

- :mod:`targets.eventsim.driver`: the target's functions (``run``, ``stream``, ``prepare``),
  :class:`EventSim` (input events, accumulator width, buffers, results in the plan's order) and
  the streaming state (:class:`Stream`, :class:`State`).
- :mod:`targets.eventsim.layout`: what is compiled from a plan once: the node table and the flat
  arrays of weights, biases and neuron parameters (:class:`Compiled`), feature maps channel-last.
- :mod:`targets.eventsim.aot`: which compiled version runs a kernel call: the one numba's
  ahead-of-time compiler built at set-up (no numba in the process), else numba's JIT.
- :mod:`targets.eventsim.kernels`: the numba-compiled functions (the simulation, the per-node
  loops, the input scan).
- :mod:`targets.eventsim.table`: the table's vocabulary (node kinds, columns ``K_*``), free of numba.

The driver's and the layout's public names are importable from here; the table's column names and
node kinds are in :mod:`targets.eventsim.table`.
"""

# ruff: noqa: F401

from targets.eventsim.driver import Events, EventSim, Outputs, State, Stream, prepare, run, stream
from targets.eventsim.layout import KIND_CODE, Compiled, compile_plan
