"""The one-step model: ``x_t, state_in... -> y_t, state_out...`` with named states.

``StepModel.from_keras`` walks the Keras model's layer chain, rebuilds every layer as a
one-step cell (``pipeline.cells``/``pipeline.perstep``), and exposes each recurrent
state as a named signature input (``lstm_h``) with an output twin (``lstm_h_out``).
``save`` writes a SavedModel whose ``step`` signature keeps those names through the
TFLite converter.
"""
from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipeline import cells, perstep, window
from pipeline.graph import Chain, ChainLayer, analyse, layer_chain, refuse
from runtime.contract import StateSpec, WindowSpec

SIGNATURE_KEY = "step"
INPUT_NAME = "x"
OUTPUT_NAME = "y"

_FACTORIES = {
    "LSTM": cells.lstm_cell,
    "GRU": cells.gru_cell,
    "SimpleRNN": cells.simple_rnn_cell,
    "Conv1D": cells.conv1d_cell,
    "Dense": perstep.dense_cell,
    "TimeDistributed": perstep.dense_cell,
    "Activation": perstep.activation_cell,
    "ReLU": perstep.relu_cell,
    "LeakyReLU": perstep.leaky_relu_cell,
    "ELU": perstep.elu_cell,
    "PReLU": perstep.prelu_cell,
    "BatchNormalization": perstep.batch_norm_cell,
    "LayerNormalization": perstep.layer_norm_cell,
    "Normalization": perstep.normalization_cell,
    **{k: perstep.identity_cell for k in perstep.IDENTITY},
}


def supported_layers() -> list[str]:
    return sorted(_FACTORIES)


def build_cell(cl: ChainLayer, name: str, layout: str) -> cells.Cell:
    if cl.head == "identity":
        return perstep.identity_cell(cl, name, layout)
    if cl.head is not None:
        return window.window_head_cell(cl, name, layout)
    factory = _FACTORIES.get(cl.kind)
    if factory is None:
        raise refuse(cl.layer, f"layer type {cl.kind} has no one-step form in stepwise",
                     f"use supported layers ({', '.join(supported_layers())})")
    return factory(cl, name, layout)


class StepModel(tf.Module):
    """One step of a Keras model, as plain ops over explicit state tensors."""

    def __init__(self, cell_list: list[cells.Cell], features: int, units: int, output_kind: str,
                 chain: Chain | None = None, warmups: list[int] | None = None):
        super().__init__(name="stepwise_step")
        self.cells = cell_list
        self.features = features
        self.units = units
        self.output_kind = output_kind
        self.chain = chain
        warmups = warmups or [0] * len(cell_list)
        self.states: list[StateSpec] = [
            StateSpec(name=f"{c.name}_{s.suffix}", input=f"{c.name}_{s.suffix}",
                      output=f"{c.name}_{s.suffix}_out", shape=s.shape, layer=c.name, kind=s.suffix,
                      warmup=w)
            for c, w in zip(cell_list, warmups) for s in c.states
        ]
        sig = [tf.TensorSpec([None, features], tf.float32, name=INPUT_NAME)] + [
            tf.TensorSpec([None, *s.shape], tf.float32, name=s.input) for s in self.states
        ]
        self.step = tf.function(self._step, input_signature=sig, autograph=False)

    @classmethod
    def from_keras(cls, model: keras.Model, layout: str = "per_gate") -> "StepModel":
        chain = analyse(model)
        taken: set[str] = set()
        cell_list = [build_cell(cl, cells.safe_name(cl.layer.name, taken), layout) for cl in chain.layers]
        features = int(model.inputs[0].shape[-1])
        units = int(model.outputs[0].shape[-1])
        return cls(cell_list, features, units, _output_kind(cell_list, units), chain,
                   [cl.warmup for cl in chain.layers])

    @property
    def window_head(self) -> bool:
        return self.chain is not None and self.chain.head is not None

    def window_spec(self, length: int | None) -> WindowSpec:
        """The manifest's window: a window head streams under ``sliding:T`` with T - 1
        zero-padded warm-up outputs; otherwise ``sliding:length`` and the valid
        convolutions' warm-up."""
        if self.window_head:
            T = self.chain.window
            return WindowSpec(length=T, reset=f"sliding:{T}", mode=window.MODE, warmup=T - 1)
        warmup = self.chain.warmup if self.chain else 0
        reset = f"sliding:{length}" if length else "never"
        return WindowSpec(length=length, reset=reset, warmup=warmup)

    def _step(self, x, *states):
        it = iter(states)
        out: dict[str, tf.Tensor] = {}
        spec_iter = iter(self.states)
        for cell in self.cells:
            mine = [next(it) for _ in cell.states]
            with tf.name_scope(cell.name):  # tensor names say their layer (pipeline.attribution)
                x, new = cell.fn(x, mine)
            for tensor in new:
                out[next(spec_iter).output] = tf.identity(tensor)
        return {OUTPUT_NAME: tf.identity(x), **out}

    def zero_states(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, *s.shape), np.float32) for s in self.states]

    def rollout(self, X: np.ndarray, states: list[np.ndarray] | None = None):
        """Run ``X`` ``[batch, T, F]`` step by step in TensorFlow, from a reset (a state
        with ``warmup`` w is left as it is for the first w steps).

        Returns ``(ys [batch, T, units], inputs)`` where ``inputs[t]`` is the list of
        state arrays fed at step t (what calibration needs), and the final states.
        """
        states = states if states is not None else self.zero_states(X.shape[0])
        ys, fed = [], []
        for t in range(X.shape[1]):
            fed.append(states)
            out = self.step(tf.constant(X[:, t, :]), *[tf.constant(s) for s in states])
            ys.append(out[OUTPUT_NAME].numpy())
            states = [out[s.output].numpy() if t >= s.warmup else old
                      for s, old in zip(self.states, states)]
        return np.stack(ys, axis=1), fed, states

    def reference_rollout(self, X: np.ndarray) -> np.ndarray:
        """What the runtime streams for ``X`` ``[m, L, F]`` from a reset: ``[m, L, units]``.
        A window head: each step's (zero-padded) window rolled out from a reset."""
        if not self.window_head:
            return self.rollout(X)[0]
        m, L, F = X.shape
        T = self.chain.window
        flat = window.padded_windows(X, T).reshape(m * L, T, F)
        return self.rollout(flat)[0][:, -1].reshape(m, L, -1)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        tf.saved_model.save(self, str(directory),
                            signatures={SIGNATURE_KEY: self.step.get_concrete_function()})
        return directory


def _output_kind(cell_list: list[cells.Cell], units: int) -> str:
    """sigmoid / softmax / linear, from the last cell that transforms values."""
    for cell in reversed(cell_list):
        if cell.activation is None and not cell.states:
            continue  # dropout, normalisation: not the output's nature
        return {"sigmoid": "sigmoid", "softmax": "softmax"}.get(cell.activation or "", "linear")
    return "linear"


def keras_sequence_outputs(model: keras.Model, X: np.ndarray) -> np.ndarray:
    """The Keras model's output after every prefix of ``X`` ``[batch, T, F]``: ``[batch, T, units]``.

    The output at step t of a recurrent layer with ``return_sequences=True`` is what the
    same layer with ``return_sequences=False`` returns for the prefix ending at t; every
    other streamable layer acts per step. So the chain is run once, through the model's
    own Keras layers, with the last recurrent layer returning sequences. A window-head
    model gives the output on the (zero-left-padded) window ending at each step; a valid
    convolution of span w gives, for the first w steps, the model on the prefix
    zero-left-padded to w + 1 samples.
    """
    chain = analyse(model)
    if chain.head is not None:
        return window.keras_window_outputs(model, X, chain.window)
    w = chain.warmup
    after = _prefix_outputs(chain, X)
    if not w:
        return after
    Z = np.zeros((X.shape[0], w, X.shape[2]), np.float32)
    warm = [_prefix_outputs(chain, np.concatenate([Z[:, t:], X[:, : t + 1]], axis=1))[:, :1]
            for t in range(min(w, X.shape[1]))]
    return np.concatenate(warm + [after], axis=1)


def float64_twin(model: keras.Model) -> keras.Model:
    """``model`` with every layer computing in float64 and the same weights: the exact
    reference float32 rounding is measured against."""
    twin = keras.models.clone_model(
        model, clone_function=lambda layer: type(layer).from_config(layer.get_config() | {"dtype": "float64"}))
    return with_weights_of(twin, model)


def with_weights_of(twin: keras.Model, model: keras.Model) -> keras.Model:
    """``twin`` (a clone of ``model``) given ``model``'s weights, so that it computes what
    ``model`` computes. ``set_weights`` alone leaves an adapted Normalization layer at mean
    0, variance 1 (it recomputes them only in ``finalize_state``)."""
    twin.set_weights(model.get_weights())
    for layer in twin.layers:
        if hasattr(layer, "finalize_state"):
            layer.finalize_state()
    return twin


def _prefix_outputs(chain: Chain, X: np.ndarray) -> np.ndarray:
    x = tf.constant(X, tf.float32)
    for cl in chain.layers:
        layer = cl.layer
        if cl.kind in ("LSTM", "GRU", "SimpleRNN") and not layer.return_sequences:
            config = layer.get_config() | {"return_sequences": True, "name": layer.name + "_seq"}
            twin = type(layer).from_config(config)
            twin.build(x.shape)
            twin.set_weights(layer.get_weights())
            layer = twin
        x = layer(x, training=False)
    return np.asarray(x, dtype=np.float32)
