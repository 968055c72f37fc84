"""Event files from real sensors: one decoder per file format and the dispatcher in front of them.

- :mod:`inputs.formats.readers`: the one way in, :func:`~inputs.formats.readers.open_events`; it
  detects the format from the file's first bytes and reads it in bounded chunks.
- :mod:`inputs.formats.nmnist`: N-MNIST / N-Caltech101 / DVS128 ATIS 5-byte records (read and write).
- :mod:`inputs.formats.aedat2`: AEDAT 2.0 (jAER).
- :mod:`inputs.formats.aedat3`: AEDAT 3.1 (cAER) polarity packets.
- :mod:`inputs.formats.aedat4`: AEDAT 4.0 (DV), through ``aedat``.
- :mod:`inputs.formats.prophesee`: Prophesee EVT 2.0 / EVT 3.0 / DAT, through ``expelliarmus``.
- :mod:`inputs.formats.arrays`: structured ``(t, x, y, p)`` arrays in ``.npy``, ``.npz`` and HDF5
  files (read and write).

Every decoder yields :data:`~inputs.events.EVENT_DTYPE` arrays and reads text headers through
:func:`~inputs.events.header_lines`; both live in :mod:`inputs.events`, shared with the rest of
:mod:`inputs`.
"""
