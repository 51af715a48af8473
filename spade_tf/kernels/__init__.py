"""Exact-but-faster forms of the computations in ``spade_tf.layers``, one module per ``perf``
option (``spade_tf.config.PerfConfig``).

Each kernel takes and returns tensors, never a layer, and computes the same sums as the plain
form that ``spade_tf.layers`` writes out in the reference's order, in another order or over
fewer pixels; ``tests/test_kernels.py`` proves each one equal to its plain form. The layers
choose a form through small dispatchers (``conv2d``, ``label_map_conv``, ``label_branch_conv``),
following ``spade_tf.perf.resolve_perf``.

This package imports nothing from ``spade_tf`` but ``spade_tf.config`` (laid out like
stylegan3's ``torch_utils/ops`` and SIGE's ``sige/nn``).

- ``class_tables``: CLADE's per-class lookups as gathers or one 1x1 conv (``perf.clade_lookup``);
- ``constant_map_conv``: a conv of a map holding one vector everywhere (OASIS' noise vector)
  on a (2p+1)^2 map (``perf.broadcast_noise``);
- ``conv_gradients``: the swapped kernel gradient and the flipped input gradient
  (``perf.filter_gradient``);
- ``delegate_forms``: the one-hot, instance edges, 2x upsampling and output levels in ops the
  TFLite GPU delegate takes (the GPU TFLite graph; ``perf.resize_upsampling``);
- ``norm_gradients``: the closed-form normalization and modulation gradients
  (``perf.closed_form_gradients``);
- ``onehot_conv``: a conv of a one-hot label map as lookups (``perf.label_conv``);
- ``regions``: SPADE's gamma/beta convs only near label boundaries (``perf.uniform_regions``).
"""
