"""Pieces every stage shares and nothing stage-specific; imports no other package of the project.

- :mod:`core.errors`: the one error hierarchy, rooted in :class:`core.errors.SnnDeployError`.
- :mod:`core.config`: command configuration (dataclass defaults, a config file, flags).
- :mod:`core.fileio`: safe writes: atomic files, output paths checked before work, staging folders
  outside output folders, locks, and one-line messages for OS and memory errors.
- :mod:`core.fixed`: Loihi 2 fixed-point arithmetic, as Lava's bit-accurate ``fixed_pt`` models compute
  it, shared by conversion's calibration and every integer target.
"""

# Time steps per sample any stage takes (1000 s at 1 ms): a graph, a run, training. Here, not in
# core.config, because the Lava worker (Python 3.10: no tomllib) reads graphs too.
MAX_STEPS = 1_000_000
