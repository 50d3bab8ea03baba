"""From a Keras model to an ordered chain of streamable layers, or a clear refusal.

A model streams when every layer's output at step t depends only on samples 0..t and
on state it can carry. The chain is the model's single path from its input to its
output; nested Sequential/functional sub-models are expanded in place.
"""
from __future__ import annotations

from dataclasses import dataclass

import keras

from runtime.errors import UnstreamableModelError

RECURRENT = ("LSTM", "GRU", "SimpleRNN")

# Layer types refused outright: (why it cannot stream, what to change).
_REFUSED = {
    "Flatten": (
        "it joins all time steps into one vector, so its output needs the whole window "
        "(including samples that have not arrived yet)",
        "remove the Flatten layer and set return_sequences=False on the last recurrent layer",
    ),
    "Reshape": (
        "it can move values across the time axis, so a step's output would depend on other steps",
        "remove it; let the last recurrent layer use return_sequences=False",
    ),
    "Bidirectional": (
        "its backward half reads the window from its end, which has not arrived while streaming",
        "use a unidirectional recurrent layer",
    ),
    "GlobalAveragePooling1D": (
        "it pools over the whole window",
        "use return_sequences=False on the last recurrent layer instead of pooling over time",
    ),
    "GlobalMaxPooling1D": (
        "it pools over the whole window",
        "use return_sequences=False on the last recurrent layer instead of pooling over time",
    ),
    "AveragePooling1D": ("it pools neighbouring time steps together", "remove the pooling layer"),
    "MaxPooling1D": ("it pools neighbouring time steps together", "remove the pooling layer"),
    "Attention": ("it attends over the whole window, past and future", "remove the attention layer"),
    "AdditiveAttention": ("it attends over the whole window, past and future", "remove the attention layer"),
    "MultiHeadAttention": ("it attends over the whole window, past and future", "remove the attention layer"),
    "RepeatVector": ("it turns one vector into a sequence", "remove it"),
    "Permute": ("it can move the time axis", "remove it"),
    "Cropping1D": ("it drops time steps from the window", "remove it"),
    "ZeroPadding1D": ("it inserts time steps into the window", "remove it"),
    "UpSampling1D": ("it changes the number of time steps", "remove it"),
    "Masking": ("masked (skipped) steps have no meaning for a live stream", "remove it and send only real samples"),
}


@dataclass(frozen=True)
class ChainLayer:
    """One layer of the chain and whether its input still has a time axis."""

    layer: keras.layers.Layer
    has_time: bool

    @property
    def kind(self) -> str:
        return type(self.layer).__name__


def refuse(layer: keras.layers.Layer, why: str, fix: str) -> UnstreamableModelError:
    return UnstreamableModelError(
        f"layer '{layer.name}' ({type(layer).__name__}) cannot stream: {why}. Fix: {fix}."
    )


def layer_chain(model: keras.Model) -> list[ChainLayer]:
    """The model's layers in order, each tagged with whether its input is ``[batch, T, F]``."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UnstreamableModelError(
            f"model '{model.name}' has {len(model.inputs)} inputs and {len(model.outputs)} "
            f"outputs; only single-input, single-output models stream"
        )
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 3:
        raise UnstreamableModelError(
            f"model input shape {shape} is not [batch, time, features]; a streaming model "
            f"takes sequences of samples"
        )
    layers = _flatten(model)
    chain: list[ChainLayer] = []
    has_time = True
    for layer in layers:
        _check(layer, has_time)
        chain.append(ChainLayer(layer, has_time))
        if type(layer).__name__ in RECURRENT and not layer.return_sequences:
            has_time = False
    return chain


def _flatten(model: keras.Model) -> list[keras.layers.Layer]:
    out: list[keras.layers.Layer] = []
    prev = None
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if not isinstance(model, keras.Sequential):
            _check_single_path(model, layer, prev)
        prev = layer
        if isinstance(layer, keras.Model):
            out.extend(_flatten(layer))
        else:
            out.append(layer)
    return out


def _check_single_path(model: keras.Model, layer: keras.layers.Layer, prev) -> None:
    inputs = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
    expected = model.inputs[0] if prev is None else prev.output
    if len(inputs) != 1 or inputs[0] is not expected:
        raise UnstreamableModelError(
            f"layer '{layer.name}' ({type(layer).__name__}) is not on a single path from the "
            f"model input: branching and merging models are not supported for streaming"
        )


def _check(layer: keras.layers.Layer, has_time: bool) -> None:
    kind = type(layer).__name__
    if kind in _REFUSED:
        why, fix = _REFUSED[kind]
        raise refuse(layer, why, fix)
    if kind in RECURRENT:
        if getattr(layer, "go_backwards", False):
            raise refuse(layer, "go_backwards=True reads the window from its end",
                         "set go_backwards=False")
        if getattr(layer, "return_state", False):
            raise refuse(layer, "return_state=True adds outputs the step model cannot expose",
                         "set return_state=False (stepwise exposes every state by name)")
        if not has_time:
            raise refuse(layer, "its input has no time axis", "set return_sequences=True on the layer before it")
    if kind == "Conv1D":
        if layer.padding != "causal":
            raise refuse(
                layer, f"padding='{layer.padding}' makes step t depend on later samples "
                       f"(or needs a full window)", "use padding='causal'",
            )
        if tuple(layer.strides) != (1,):
            raise refuse(layer, f"strides={layer.strides} change the sample rate", "use strides=1")
        if layer.groups != 1:
            raise refuse(layer, "grouped convolutions are not supported", "use groups=1")
        if not has_time:
            raise refuse(layer, "its input has no time axis", "move it before the last recurrent layer")
    axis = getattr(layer, "axis", None)
    if kind in ("BatchNormalization", "LayerNormalization", "Normalization") and has_time:
        axes = axis if isinstance(axis, (list, tuple)) else [axis]
        if axes not in ([-1], [2], [None]) and kind != "Normalization":
            raise refuse(layer, f"it normalises over axis {axis}, which includes the time axis",
                         "normalise over the feature axis only (axis=-1)")
