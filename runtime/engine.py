"""The device engine: one sample in, one prediction out, recurrent state carried.

Each step normalises the sample with the manifest's mean/std, writes it to the step
model's sample input, invokes once, and copies every state output back into its state
input (by name; dequantized and requantized when the two sides are quantized
differently). Several independent streams are lanes of the batch axis: one invoke per
step whatever their number. The state lives in the interpreter's input tensors; the
step's own buffers are allocated once, at load (``get_tensor`` copies of the outputs,
a few floats each, are cheaper than holding ``tensor()`` views).

Non-finite values never enter or leave the state: a NaN/Inf sample is rejected before
anything is written (``DataError`` from ``step``, a ``rejected`` lane from
``step_lanes``); a state that turns non-finite after a step resets that lane, logged.
"""
from __future__ import annotations

import collections
import logging
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np

from runtime.backend import AffineCast, BoundTensor, LoadedModel, check_tensors, load_model
from runtime.contract import ModelContract, OutputSpec, StateSpec, load_contract, read_model_bytes
from runtime.errors import ConfigError, ContractError, DataError, StateCorruptError
from runtime.reset import ResetPolicy, ResetSchedule, parse_reset
from runtime.snapshot import StateSnapshot

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Prediction:
    """One stream's output for one sample.

    ``y`` ``[units]`` float32; ``step`` counts the samples behind ``y`` since the last
    reset (1 right after one); ``seq`` counts the lane's resets since load; ``reset``
    names why the lane was reset just before this sample (``"window"``, ``"gap"``);
    ``fault`` is ``"nonfinite_state"`` when the state after it was non-finite and reset.
    """

    y: np.ndarray
    step: int
    lane: int
    seq: int
    output: OutputSpec = field(repr=False)
    reset: str | None = None
    fault: str | None = None

    @property
    def label(self) -> str:
        return self.output.label_of(self.y)


@dataclass(slots=True)
class LanePredictions:
    """All lanes after one batched step: ``y`` ``[lanes, units]`` (NaN rows for lanes that
    did not step), ``steps``/``seq`` ``[lanes]`` and ``[lanes]`` bool masks ``stepped``,
    ``rejected`` (NaN/Inf sample, state unchanged), ``faults`` (non-finite state, reset)."""

    y: np.ndarray
    steps: np.ndarray
    seq: np.ndarray
    stepped: np.ndarray
    rejected: np.ndarray
    faults: np.ndarray
    output: OutputSpec = field(repr=False)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, lane: int) -> Prediction:
        return Prediction(self.y[lane], int(self.steps[lane]), lane, int(self.seq[lane]),
                          self.output, fault="nonfinite_state" if self.faults[lane] else None)

    def labels(self) -> list[str]:
        return [self.output.label_of(row) for row in self.y]


@dataclass
class _State:
    """One state: its tensors, how its output goes back to its input, its zero value."""

    spec: StateSpec
    tin: BoundTensor
    tout: BoundTensor
    cast: AffineCast | None  # None: the stored values are copied as they are
    zero: np.ndarray
    check: bool  # a float output: look for NaN/Inf after each step


class Engine:
    """Runs a step model: ``Engine.load(artifacts_dir, ...)`` then ``step(sample)``.

    ``streams`` independent streams (``lanes=`` at load) occupy ``lanes`` lanes of the
    batch: one each, or N each under ``sliding:N`` (then only one stream).
    """

    def __init__(self, contract: ModelContract, model: LoadedModel, variant: str,
                 lanes: int = 1, reset: str | ResetPolicy = "never"):
        self.contract = contract
        self.variant = variant
        self.model_sha256 = contract.variant(variant).sha256
        self.policy = parse_reset(reset)
        if lanes < 1 or (self.policy.kind == "sliding" and lanes != 1):
            raise ConfigError(f"lanes={lanes}: need >= 1, and exactly 1 with {self.policy}")
        self.streams = lanes
        self.schedule = ResetSchedule(self.policy, lanes)
        self.lanes = self.schedule.lanes
        self.backend = model.backend
        self.samples_seen = 0
        self.last_frame_seq = -1
        self.resets: collections.Counter[str] = collections.Counter()
        self.rejected = 0
        self._model = model
        self._bind(contract, model)
        self._clear(list(range(self.lanes)))

    @classmethod
    def load(cls, artifacts_dir: str | os.PathLike, variant: str | None = None, lanes: int = 1,
             reset: str | None = None, backend: str | None = None,
             num_threads: int | None = None) -> "Engine":
        """Read the manifest, check the model file's sha256, bind tensors by name.

        ``reset`` defaults to the manifest's ``window.reset``; ``backend`` to the first
        installed interpreter package (or ``STEPWISE_BACKEND``).
        """
        contract = load_contract(artifacts_dir)
        spec = contract.variant(variant)
        data = read_model_bytes(contract, artifacts_dir, spec.name)
        model = load_model(data, contract.signature_key, backend=backend, num_threads=num_threads)
        check_tensors(model, spec.tensors,
                      [contract.input.name] + [s.input for s in contract.states],
                      [o.name for o in contract.outputs] + [s.output for s in contract.states])
        engine = cls(contract, model, spec.name, lanes=lanes, reset=reset or contract.window.reset)
        log.info("engine: %s (%s), %d lane(s), reset %s", spec.file, spec.name, engine.lanes,
                 engine.policy)
        return engine

    def _bind(self, contract: ModelContract, model: LoadedModel) -> None:
        model.resize(self.lanes)
        it = model.interpreter
        self._set, self._get, self._invoke = it.set_tensor, it.get_tensor, it.invoke
        inp = contract.input
        std = np.asarray(inp.std, np.float32)
        if len(inp.mean) != inp.features or std.shape != (inp.features,) or not np.all(std > 0):
            raise ContractError(f"manifest normalisation needs {inp.features} means and "
                                f"positive stds, got mean={inp.mean} std={inp.std}")
        self._mean = np.asarray(inp.mean, np.float32)
        self._std = std
        self._x = model.inputs[inp.name]
        self._xbuf = np.zeros((self.lanes, inp.features), np.float32)
        self._xrow = self._xbuf[0] if self.lanes == 1 else self._xbuf
        self._xq = AffineCast.between(_REAL, self._x, self._xbuf.shape) \
            if self._x.quantized else None
        self._y = model.outputs[contract.output.name]
        self._out = contract.output
        self._ydq = AffineCast.between(self._y, _REAL, (self.lanes, *self._y.shape)) \
            if self._y.quantized else None
        self._states = [self._state_for(s, model) for s in contract.states]
        self._plan = [(s.tout.index, s.check, s.cast, s.tin.index) for s in self._states]

    def _state_for(self, spec: StateSpec, model: LoadedModel) -> _State:
        tin, tout = model.inputs[spec.input], model.outputs[spec.output]
        if tin.shape != tout.shape or tin.shape != spec.shape:
            raise ContractError(f"state {spec.name!r}: input {tin.name} {list(tin.shape)}, output "
                                f"{tout.name} {list(tout.shape)}, manifest {list(spec.shape)}")
        cast = None
        if tin.dtype != tout.dtype or (tin.scale, tin.zero_point) != (tout.scale, tout.zero_point):
            cast = AffineCast.between(tout, tin, (self.lanes, *spec.shape))
            if cast.is_identity_on(tout.dtype):
                cast = None
            log.debug("state %s: %s -> %s carried %s", spec.name, tout.name, tin.name,
                      "as stored" if cast is None else "requantized")
        zero = tin.to_raw(np.zeros((), np.float32), np.zeros((), tin.dtype))
        return _State(spec, tin, tout, cast, zero, check=tout.dtype.kind == "f")

    @property
    def features(self) -> int:
        return self.contract.input.features

    @property
    def output(self) -> OutputSpec:
        return self.contract.output

    def steps(self) -> np.ndarray:
        """Steps since reset per lane ``[lanes]`` (a copy)."""
        return self.schedule.steps.copy()

    # -- stepping ------------------------------------------------------------------
    def step(self, sample, t: float | None = None) -> Prediction | LanePredictions:
        """One sample ``[F]`` of the single stream -> ``Prediction`` (``[lanes, F]`` goes to
        ``step_lanes``). ``t`` is the sample's unix time for ``gap:`` (default: now).
        Raises ``DataError`` for a wrong shape or a NaN/Inf sample (state unchanged)."""
        x = np.asarray(sample, np.float32)
        if x.shape != self._mean.shape:
            if x.ndim == 2:
                return self.step_lanes(x, t=t)
            raise DataError(f"sample has shape {list(x.shape)}; the model takes {self.features} "
                            f"features ({', '.join(self.contract.input.feature_names)})")
        if self.streams != 1:
            raise DataError(f"this engine runs {self.streams} lanes: use step_lanes")
        row = self._xrow
        np.subtract(x, self._mean, out=row)
        np.divide(row, self._std, out=row)
        if not math.isfinite(np.vdot(row, row)) and not np.isfinite(row).all():
            self.rejected += 1
            raise DataError(f"sample {x.tolist()} has NaN/Inf values: rejected, state unchanged")
        sched = self.schedule
        reason, lane = None, 0
        if self.lanes > 1:  # sliding: same sample in every lane, one lane restarts
            cleared, lane = sched.sliding_turn()
            self._clear([cleared])
        elif sched.due(t):
            reason = self.policy.kind
            self._reset_lanes([0], reason)
        bad = self._run(None)
        sched.steps += 1
        self.samples_seen += 1
        pred = Prediction(self._read_y()[lane], int(sched.steps[lane]), 0, int(sched.seq[lane]),
                          self._out, reason)
        if bad:
            self._reset_lanes(bad, "nonfinite")
            pred.fault = "nonfinite_state" if lane in bad else None
        return pred

    def step_lanes(self, X, active=None, t=None) -> LanePredictions:
        """One sample per lane ``X`` ``[lanes, F]``, one invoke. Lanes where ``active``
        ``[lanes]`` is False, or whose sample has NaN/Inf, keep their state untouched.
        ``t``: unix time, one for all lanes or ``[lanes]``."""
        X = np.asarray(X, np.float32)
        if self.lanes != self.streams:
            raise DataError(f"this engine runs {self.policy}: one stream, use step")
        mask = np.ones(self.lanes, bool) if active is None else np.array(active, bool)
        if X.shape != self._xbuf.shape or mask.shape != (self.lanes,):
            raise DataError(f"step_lanes takes [{self.lanes}, {self.features}] samples and "
                            f"[{self.lanes}] active flags, got {list(X.shape)} and "
                            f"{list(mask.shape)}")
        xb = self._xbuf
        np.subtract(X, self._mean, out=xb)
        np.divide(xb, self._std, out=xb)
        rejected = ~np.isfinite(xb).all(axis=1) & mask
        xb[rejected | ~mask] = 0.0
        mask &= ~rejected
        self.rejected += int(rejected.sum())
        due = self.schedule.due(t, mask)
        if due:
            self._reset_lanes(due, self.policy.kind)
        bad = self._run(None if mask.all() else mask)
        self.schedule.steps[mask] += 1
        self.samples_seen += int(mask.sum())
        y = self._read_y()
        y[~mask] = np.nan
        faults = np.zeros(self.lanes, bool)
        if bad:
            faults[bad] = True
            self._reset_lanes(bad, "nonfinite")
        return LanePredictions(y, self.schedule.steps.copy(), self.schedule.seq.copy(), mask,
                               rejected, faults, self._out)

    def _run(self, mask: np.ndarray | None) -> list[int]:
        """Write the sample, invoke, carry the states of ``mask`` lanes (all if None).
        Returns the stepped lanes whose new state is non-finite (usually none)."""
        xq = self._xq
        self._set(self._x.index, self._xbuf if xq is None else xq(self._xbuf))
        self._invoke()
        finite = True
        get, set_tensor = self._get, self._set
        if mask is None:
            vdot, isfinite = np.vdot, math.isfinite
            for out_index, check, cast, in_index in self._plan:
                out = get(out_index)
                if check and not isfinite(vdot(out, out)):
                    finite = False  # (or an overflow of the sum of squares: looked at below)
                set_tensor(in_index, out if cast is None else cast(out))
        else:
            for s in self._states:
                out = get(s.tout.index)
                finite &= not s.check or bool(np.isfinite(out).all())
                cur = get(s.tin.index)
                np.copyto(cur, out if s.cast is None else s.cast(out),
                          where=mask.reshape((-1,) + (1,) * len(s.spec.shape)))
                set_tensor(s.tin.index, cur)
        return [] if finite else self._nonfinite_lanes(mask)

    def _nonfinite_lanes(self, mask: np.ndarray | None) -> list[int]:
        ok = np.ones(self.lanes, bool)
        for s in self._states:
            if s.check:
                ok &= np.isfinite(self._get(s.tout.index).reshape(self.lanes, -1)).all(axis=1)
        return np.flatnonzero(~ok if mask is None else ~ok & mask).tolist()

    def _read_y(self) -> np.ndarray:
        raw = self._get(self._y.index)
        return raw if self._ydq is None else self._ydq(raw).copy()

    # -- resets --------------------------------------------------------------------
    def reset(self, lane: int | None = None, reason: str = "explicit") -> None:
        """Zero the state of one stream (all its lanes), or of every stream if ``lane`` is None."""
        if lane is not None and not 0 <= lane < self.streams:
            raise ConfigError(f"lane {lane} does not exist (this engine has {self.streams})")
        per = self.policy.lanes_per_stream
        first = 0 if lane is None else lane * per
        self._reset_lanes(list(range(first, self.lanes if lane is None else first + per)), reason)

    def _reset_lanes(self, lanes: list[int], reason: str) -> None:
        self._clear(lanes)
        self.schedule.was_reset(lanes)
        self.resets[reason] += len(lanes)
        if reason == "nonfinite":
            log.warning("state of lane(s) %s became non-finite: reset", lanes)
        else:
            log.log(logging.INFO if reason == "gap" else logging.DEBUG,
                    "reset lane(s) %s (%s)", lanes, reason)

    def _clear(self, lanes: list[int]) -> None:
        """Write the zero state into the given lanes' state inputs."""
        for s in self._states:
            cur = self._get(s.tin.index)
            cur[lanes] = s.zero
            self._set(s.tin.index, cur)

    # -- snapshots -----------------------------------------------------------------
    def snapshot(self) -> StateSnapshot:
        """The carried state, dequantized to float32 ``[lanes, *shape]`` per state."""
        states = {s.spec.name: s.tin.to_real(self._get(s.tin.index)).copy() for s in self._states}
        seen = self.schedule.last_t[~np.isnan(self.schedule.last_t)]
        extra = {"last_sample_ms": int(seen.max() * 1000)} if seen.size else {}
        return StateSnapshot(states=states, steps=self.schedule.steps.copy(),
                             samples_seen=self.samples_seen, last_frame_seq=self.last_frame_seq,
                             timestamp=time.time(), extra=extra)

    def restore(self, snap: StateSnapshot) -> None:
        """Resume exactly where ``snap`` was taken; ``StateCorruptError`` if it does not fit."""
        want = {s.spec.name: (self.lanes, *s.spec.shape) for s in self._states}
        got = {k: tuple(np.shape(v)) for k, v in snap.states.items()}
        if got != want or tuple(np.shape(snap.steps)) != (self.lanes,) or not snap.is_finite():
            raise StateCorruptError(
                f"snapshot does not fit this engine: states {got} and steps "
                f"{list(np.shape(snap.steps))}, expected {want} and [{self.lanes}], finite")
        for s in self._states:
            raw = np.zeros((self.lanes, *s.spec.shape), s.tin.dtype)
            self._set(s.tin.index, s.tin.to_raw(np.asarray(snap.states[s.spec.name]), raw))
        last_ms = snap.extra.get("last_sample_ms")
        self.schedule.restore(snap.steps, None if last_ms is None else last_ms / 1000.0)
        self.samples_seen = int(snap.samples_seen)
        self.last_frame_seq = int(snap.last_frame_seq)


# A plain float tensor: the "real" side of AffineCast.between.
_REAL = BoundTensor(name="real", index=-1, shape=(), dtype=np.dtype(np.float32))
