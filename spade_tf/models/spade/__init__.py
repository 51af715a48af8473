"""SPADE (NVlabs/SPADE ``models/networks/generator.py``, ``discriminator.py``, ``encoder.py``)
and CLADE (tzt101/CLADE, the same networks with ``--norm_mode clade``), in NHWC. Their layers,
in the reference's order, are ``spade_tf.layers``."""
