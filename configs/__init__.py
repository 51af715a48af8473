"""Named config presets (YAML). Shipped inside the package as ``spade_tf.configs``."""
