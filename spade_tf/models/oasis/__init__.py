"""OASIS (boschresearch/OASIS ``models/generator.py``, ``models/discriminator.py``) in NHWC."""

from spade_tf.models.oasis.discriminator import OASISDiscriminator, ResidualBlockD
from spade_tf.models.oasis.generator import OASISGenerator, broadcast_noise

__all__ = ["OASISDiscriminator", "OASISGenerator", "ResidualBlockD", "broadcast_noise"]
