"""Network families beside SPADE's (``spade_tf.generator`` / ``discriminator`` / ``encoder``,
which stay at the top level where the reference's layers read in order).

``oasis/``: boschresearch/OASIS (Sushko, Schonfeld et al., ICLR 2021): its generator (SPADE
blocks fed 3D noise) and its U-Net segmenter discriminator. Every family shares one training
step (``spade_tf.gan``), which takes its losses from the family's objective
(``spade_tf.objectives``).
"""
