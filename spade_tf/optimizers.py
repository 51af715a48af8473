"""``FusedAdam``: Keras' Adam with each variable's update in one kernel."""

from __future__ import annotations

import keras
import tensorflow as tf

from spade_tf.tf_internals import adam_slots


@keras.saving.register_keras_serializable(package="spade_tf")
class FusedAdam(keras.optimizers.Adam):
    """Adam (Kingma & Ba, 2015) whose per-variable update is one ``ResourceApplyAdam`` kernel.

    Keras' Adam updates a variable with about ten elementwise ops, each a pass over the
    variable with its own temporary; for the 96.5M-parameter ade20k generator that is 0.58 s
    per step here, against 0.13 s for the fused kernel, which reads and writes the variable,
    m and v once. The formula is Keras' own (lr * sqrt(1 - b2^t) / (1 - b1^t) * m /
    (sqrt(v) + eps)), so results agree with ``keras.optimizers.Adam`` to float rounding
    (tests/test_performance.py) and the slot variables, hence checkpoints, are the same.
    Falls back to Keras' update for amsgrad and for non-TensorFlow variables.

    Args:
        **kwargs: ``keras.optimizers.Adam`` arguments.
    """

    def update_step(self, gradient, variable, learning_rate):
        handle = getattr(variable, "handle", None)
        if self.amsgrad or handle is None:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        m, v = adam_slots(self, variable)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=handle, m=m.value.handle, v=v.value.handle,
            beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(tf.convert_to_tensor(gradient), dtype))
