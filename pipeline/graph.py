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
    "Bidirectional": (
        "its backward half reads the window from its end, which has not arrived while streaming",
        "use a unidirectional recurrent layer",
    ),
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

# Window heads: layers that read a fixed window of per-step outputs at once. They stream
# exactly over windows of the model's input length (``pipeline.window``).
WINDOW_HEADS = ("Flatten", "Reshape", "GlobalAveragePooling1D", "GlobalMaxPooling1D",
                "AveragePooling1D", "MaxPooling1D")
_NEEDS_WINDOW = {
    "Flatten": ("it joins all time steps into one vector, so its output needs the whole window",
                "remove the Flatten layer and set return_sequences=False on the last recurrent layer"),
    "Reshape": ("it can move values across the time axis, so a step's output would depend on other steps",
                "reshape to [time * units] only (as Flatten does), or remove it and let the last "
                "recurrent layer use return_sequences=False"),
    "GlobalAveragePooling1D": ("it pools over the whole window",
                               "use return_sequences=False on the last recurrent layer instead of pooling over time"),
    "GlobalMaxPooling1D": ("it pools over the whole window",
                           "use return_sequences=False on the last recurrent layer instead of pooling over time"),
    "AveragePooling1D": ("it pools neighbouring time steps together",
                         "use pool_size equal to the window length (one pool over the whole window), or remove it"),
    "MaxPooling1D": ("it pools neighbouring time steps together",
                     "use pool_size equal to the window length (one pool over the whole window), or remove it"),
}
_FIXED_WINDOW = ("; the model's input has no fixed window length to stream it over",
                 "give the model a fixed input length (keras.Input((T, features))) to stream it exactly "
                 "over windows of T, or ")


@dataclass(frozen=True)
class ChainLayer:
    """One layer of the chain: whether its input still has a time axis, that axis's
    length (None: free), the window head it is (``"flatten"``/``"mean"``/``"max"``, or
    ``"identity"`` for a Flatten of one step), and ``warmup``: how many steps after a
    reset its input is not yet valid (the spans of the valid convolutions below it)."""

    layer: keras.layers.Layer
    has_time: bool
    steps: int | None = None
    head: str | None = None
    warmup: int = 0

    @property
    def kind(self) -> str:
        return type(self.layer).__name__


@dataclass(frozen=True)
class Chain:
    """A model's streamable chain. ``window``: the model's fixed input length (None: free);
    ``head``: the window head's index in ``layers`` (None: the model is a plain stream);
    ``warmup``: the spans of all valid convolutions (outputs before it are warm-up)."""

    layers: tuple[ChainLayer, ...]
    window: int | None
    head: int | None
    warmup: int

    @property
    def head_layer(self) -> ChainLayer | None:
        return None if self.head is None else self.layers[self.head]


def refuse(layer: keras.layers.Layer, why: str, fix: str) -> UnstreamableModelError:
    return UnstreamableModelError(
        f"layer '{layer.name}' ({type(layer).__name__}) cannot stream: {why}. Fix: {fix}."
    )


def layer_chain(model: keras.Model) -> list[ChainLayer]:
    """The model's layers in order, each tagged with whether its input is ``[batch, T, F]``."""
    return list(analyse(model).layers)


def analyse(model: keras.Model) -> Chain:
    """The chain of ``model``, or ``UnstreamableModelError`` naming the layer and the fix."""
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
    window = None if shape[1] is None else int(shape[1])
    chain: list[ChainLayer] = []
    has_time, steps, warmup, head = True, window, 0, None
    for layer in _flatten(model):
        _check(layer, has_time)
        kind = type(layer).__name__
        role = _head_role(layer, has_time, steps, head is not None) if kind in WINDOW_HEADS else None
        chain.append(ChainLayer(layer, has_time, steps, role, warmup))
        if role in ("flatten", "mean", "max"):
            head, has_time = len(chain) - 1, False
        elif kind in RECURRENT and not layer.return_sequences:
            has_time = False
        elif kind == "Conv1D" and layer.padding == "valid":
            if warmup:
                raise refuse(layer, "a second valid convolution's warm-up would read the first one's "
                                    "warm-up outputs", "use padding='causal' for all but the first")
            span = (layer.kernel_size[0] - 1) * layer.dilation_rate[0]
            warmup += span
            steps = None if steps is None else steps - span
    return Chain(tuple(chain), window, head, warmup)


def _head_role(layer: keras.layers.Layer, has_time: bool, steps: int | None, after_head: bool) -> str:
    """What a window-head layer does here, or a refusal (``WINDOW_HEADS``)."""
    kind = type(layer).__name__
    why, fix = _NEEDS_WINDOW[kind]
    if not has_time:  # after the head (or a last-step recurrent layer): only a no-op reshape
        if kind == "Flatten" or (kind == "Reshape" and len(layer.target_shape) == 1):
            return "identity"
        if after_head:
            raise refuse(layer, why + " a second time (the model already has a window head)", fix)
        raise refuse(layer, why, fix)
    if steps is None:
        raise refuse(layer, why + _FIXED_WINDOW[0], _FIXED_WINDOW[1] + fix)
    units = int(layer.input.shape[-1])
    if kind == "Flatten":
        return "flatten"
    if kind == "Reshape":
        if tuple(layer.target_shape) in ((steps * units,), (-1,)):
            return "flatten"
        raise refuse(layer, why, fix)
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise refuse(layer, "it pools over the feature axis (data_format='channels_first')",
                     "use data_format='channels_last'")
    if kind.startswith("Global"):
        return "mean" if "Average" in kind else "max"
    pool = int(layer.pool_size[0])
    if pool != steps or layer.padding != "valid":
        raise refuse(layer, f"{why} (pool_size={pool}, padding='{layer.padding}', over a window "
                            f"of {steps} steps)", fix)
    return "mean" if "Average" in kind else "max"


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
        if layer.padding not in ("causal", "valid"):
            raise refuse(
                layer, f"padding='{layer.padding}' centres the kernel, so step t reads samples "
                       f"after t", "use padding='causal', or 'valid' (streamed with warm-up steps)",
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
