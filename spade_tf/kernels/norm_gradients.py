"""Closed-form training gradients of the normalizations and of SPADE's modulation
(``perf.closed_form_gradients``): fewer elementwise passes, and fewer tensors kept for the
backward pass, than differentiating the forward op by op. The same gradients to float rounding
(tests/test_kernels.py)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def normalize_closed_form(x, mean, var, count, epsilon, axes, replica_context=None):
    """(x - mean) * rsqrt(var + epsilon) whose gradient treats mean and var as the batch (or
    instance) statistics of x over ``axes`` that they are, in closed form:
    dx = rstd * (dy - sum(dy) / count - y * sum(dy * y) / count).

    Autodiff of the two-pass statistics takes about 8 elementwise passes and keeps x - mean for
    the backward pass; this takes 3 and keeps only y. ``mean`` and ``var`` arrive without a
    gradient of their own (stop_gradient'ed by the caller). With ``replica_context`` (synchronized
    batch norm under a strategy) the two sums are all-reduced, as autodiff's all-reduce gradients
    do. The same gradient to float rounding (tests/test_performance.py).
    """
    rstd = tf.math.rsqrt(var + epsilon)

    @tf.custom_gradient
    def normalize(x):
        y = (x - mean) * rstd

        def grad(dy):
            sums = [tf.reduce_sum(dy, axes, keepdims=True),
                    tf.reduce_sum(dy * y, axes, keepdims=True)]
            if replica_context is not None:
                sums = replica_context.all_reduce("sum", sums)
            return rstd * (dy - sums[0] / count - y * (sums[1] / count))

        return y, grad

    return normalize(x)


def modulate(normalized, gamma, beta, slope=None):
    """SPADE's ``normalized * (1 + gamma) + beta``, then leaky ReLU with ``slope`` unless None,
    with a hand-written gradient.

    Autodiff keeps ``1 + gamma`` and the pre-activation for the backward pass, two more tensors
    of the activation's size per SPADE layer; this keeps only ``normalized``, ``gamma`` and the
    output (the next conv keeps it anyway), and reads the leaky ReLU's mask from the output's sign
    (the same mask as from its input, since the slope is positive). Exact.
    """

    @tf.custom_gradient
    def fn(normalized, gamma, beta):
        out = normalized * (1.0 + gamma) + beta
        if slope is not None:
            out = tf.nn.leaky_relu(out, slope)

        def grad(dout):
            if slope is not None:
                # The LeakyRelu op holds its slope as a float32 attribute: the same number here.
                dout = tf.where(out > 0, dout, dout * float(np.float32(slope)))
            return dout * (1.0 + gamma), dout * normalized, dout

        return out, grad

    return fn(normalized, gamma, beta)

