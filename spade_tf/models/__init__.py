"""The network families, one folder each; every family shares one training step
(``spade_tf.gan.GauGAN``), which takes its losses from the family's objective
(``spade_tf.objectives``).

- ``spade/``: NVlabs/SPADE (and tzt101/CLADE, its ``--norm_mode clade``): generator,
  multiscale discriminator, encoder. Their layers read in the reference's order in
  ``spade_tf.layers``.
- ``oasis/``: boschresearch/OASIS (Sushko, Schonfeld et al., ICLR 2021): its generator (SPADE
  blocks fed 3D noise) and its U-Net segmenter discriminator.
"""
