"""spade-tf: SPADE / GauGAN (Park et al., CVPR 2019) in TensorFlow 2 / Keras 3."""

__version__ = "0.1.0"
