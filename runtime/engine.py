"""The device engine: one sample in, one prediction out, recurrent state carried.

Each step normalises the sample with the manifest's mean/std, writes it to the step
model's sample input, invokes once, and copies every state output back into its state
input (by name; dequantized and requantized when the two sides are quantized
differently). Several independent streams are lanes of the batch axis: one invoke per
step whatever their number. The state lives in the interpreter's input tensors; the
step works on numpy views of the interpreter's own tensor buffers, taken once at load:
the sample is normalised straight into the input tensor, and each state output is copied
into its input with one assignment; nothing is allocated per step but the prediction.

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

from runtime.affine import AffineCast
from runtime.backend import BoundTensor, LoadedModel, check_tensors, load_model
from runtime.contract import ModelContract, OutputSpec, StateSpec, load_contract, read_model_bytes
from runtime.errors import ConfigError, ContractError, DataError, StateCorruptError
from runtime.reset import ResetPolicy, ResetSchedule, parse_reset
from runtime.snapshot import StateSnapshot
from runtime.stream_state import StreamState
from runtime.window import carry_mask, check_policy, lane_offsets, warm_states

log = logging.getLogger(__name__)

# Every float state output is checked for NaN/Inf after this many steps, after any step
# whose output is non-finite, and before every snapshot. The output is checked every step:
# in the recurrent cells a NaN in any state reaches the output in the same step (an LSTM's
# c cannot become infinite from finite values: |c| grows by at most 1 per step), so a
# state goes non-finite unseen for at most this many steps only where an activation is
# unbounded (a ReLU SimpleRNN overflowing to +inf under a saturated sigmoid head).
STATE_CHECK_EVERY = 16


@dataclass(slots=True)
class Prediction:
    """One stream's output for one sample.

    ``y`` ``[units]`` float32; ``step`` counts the samples behind ``y`` since the last
    reset (1 right after one); ``seq`` counts the lane's resets since load; ``reset``
    names why the lane was reset just before this sample (``"window"``, ``"gap"``);
    ``fault`` is ``"nonfinite_state"`` when the state after it was non-finite and reset;
    ``warmup`` marks an output from a zero-left-padded window (fewer samples since the
    reset than the model's window head or valid convolution needs).
    """

    y: np.ndarray
    step: int
    lane: int
    seq: int
    output: OutputSpec = field(repr=False)
    reset: str | None = None
    fault: str | None = None
    warmup: bool = False

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
    warmup: np.ndarray | None = None  # [lanes] bool: zero-padded warm-up outputs

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, lane: int) -> Prediction:
        return Prediction(self.y[lane], int(self.steps[lane]), lane, int(self.seq[lane]),
                          self.output, fault="nonfinite_state" if self.faults[lane] else None,
                          warmup=bool(self.warmup[lane]) if self.warmup is not None else False)

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
    check: bool  # float state values: looked at for NaN/Inf (STATE_CHECK_EVERY)
    vin: np.ndarray  # views on the interpreter's buffers, [lanes, *shape]
    vout: np.ndarray


class Engine:
    """Runs a step model: ``Engine.load(artifacts_dir, ...)`` then ``step(sample)``.

    ``streams`` independent streams (``lanes=`` at load) occupy ``lanes`` lanes of the
    batch: one each, or N each under ``sliding:N`` (then only one stream). A window-head
    model runs only under ``sliding:T``; ``raw=True`` steps any model under any policy
    from zero states, with no warm-up states (a check of the step model itself).
    """

    def __init__(self, contract: ModelContract, model: LoadedModel, variant: str,
                 lanes: int = 1, reset: str | ResetPolicy = "never", raw: bool = False):
        self.contract = contract
        self.variant = variant
        self.model_sha256 = contract.variant(variant).sha256
        self.policy = parse_reset(reset)
        if not raw:
            check_policy(contract.window, self.policy, lanes)
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
        self._offset = np.zeros(self.lanes, np.int64)  # zero samples credited per lane
        self._warm: list[np.ndarray] | None = None
        self._warmup_n = int(contract.window.warmup)
        self._bind(contract, model)
        self._clear(list(range(self.lanes)))
        if contract.window.mode == "window_head" and not raw:
            self._warm = warm_states(self._states, self._invoke, self._zero_sample, self.lanes)
            self._clear(list(range(self.lanes)))

    @classmethod
    def load(cls, artifacts_dir: str | os.PathLike, variant: str | None = None, lanes: int = 1,
             reset: str | None = None, backend: str | None = None,
             num_threads: int | None = None, raw: bool = False) -> "Engine":
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
        engine = cls(contract, model, spec.name, lanes=lanes, reset=reset or contract.window.reset,
                     raw=raw)
        log.info("engine: %s (%s), %d lane(s), reset %s", spec.file, spec.name, engine.lanes,
                 engine.policy)
        return engine

    def _bind(self, contract: ModelContract, model: LoadedModel) -> None:
        model.resize(self.lanes)
        inp = contract.input
        self._mean, self._std = inp.normalisation()  # applied in place: InputSpec.normalise
        self._x = model.inputs[inp.name]
        self._xv = model.view(self._x)
        shape = (self.lanes, inp.features)
        self._xq = AffineCast.between(_REAL, self._x, shape) if self._x.quantized else None
        # the normalised sample: straight into the input tensor unless it is quantized
        self._xbuf = self._xv if self._xq is None else np.zeros(shape, np.float32)
        self._xrow = self._xbuf[0] if self.lanes == 1 else self._xbuf
        self._y = model.outputs[contract.output.name]
        self._yv = model.view(self._y)
        self._out = contract.output
        self._ydq = AffineCast.between(self._y, _REAL, (self.lanes, *self._y.shape)) \
            if self._y.quantized else None
        self._ycheck = self._ydq is None
        self._states = [self._state_for(s, model) for s in contract.states]
        self._carry = [(s.vin, s.vout, s.cast) for s in self._states]
        views = [(self._x, self._xv), (self._y, self._yv)]
        views += [v for s in self._states for v in ((s.tin, s.vin), (s.tout, s.vout))]
        self._invoke = model.pinned_invoke(views)
        self._countdown = STATE_CHECK_EVERY  # step_lanes' count to the next state check
        self._step_one = self._compile_step()

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
        return _State(spec, tin, tout, cast, zero, check=tin.dtype.kind == "f",
                      vin=model.view(tin), vout=model.view(tout))

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
        x = sample if type(sample) is np.ndarray else np.asarray(sample, np.float32)
        if x.shape != self._mean.shape:
            if x.ndim == 2:
                return self.step_lanes(x, t=t)
            raise DataError(f"sample has shape {list(x.shape)}; the model takes {self.features} "
                            f"features ({', '.join(self.contract.input.feature_names)})")
        if self.streams != 1:
            raise DataError(f"this engine runs {self.streams} lanes: use step_lanes")
        return self._step_one(x, t)

    def _compile_step(self):
        """The single-stream step as a closure over everything it touches (the per-sample
        path: no attribute lookups, one numpy call per buffer)."""
        subtract, divide, vdot, isfinite = np.subtract, np.divide, np.vdot, math.isfinite
        mean, std, row, first = self._mean, self._std, self._xrow, self._xbuf[0]
        xq, xbuf, xv, invoke = self._xq, self._xbuf, self._xv, self._invoke
        plain = tuple((s.vin, s.vout) for s in self._states if s.cast is None and not s.spec.warmup)
        casts = tuple((s.vin, s.vout, s.cast) for s in self._states
                      if s.cast is not None and not s.spec.warmup)
        gated = tuple(s for s in self._states if s.spec.warmup)
        offset, warm_n = self._offset, self._warmup_n
        zeros = tuple((s.vin, s.zero) for s in self._states)
        sched, out, yv, ydq = self.schedule, self._out, self._yv, self._ydq
        steps, seq, timed, sliding = sched.steps, sched.seq, sched.timed, self.lanes > 1
        ycheck, every = ydq is None, STATE_CHECK_EVERY
        add, ones = np.add, np.ones_like(steps)
        countdown = every

        def step(x: np.ndarray, t: float | None) -> Prediction:
            nonlocal countdown
            subtract(x, mean, out=row)  # [F], or [lanes, F] under sliding: every lane
            divide(row, std, out=row)
            if not isfinite(vdot(first, first)) and not np.isfinite(first).all():
                self.rejected += 1
                raise DataError(f"sample {x.tolist()} has NaN/Inf values: rejected, state unchanged")
            reason, lane = None, 0
            if sliding:  # one lane restarts; the one that has seen the window is read
                cleared, lane = sched.sliding_turn()
                for vin, zero in zeros:
                    vin[cleared] = zero
                offset[cleared] = 0
            elif timed and sched.due(t):
                reason = self.policy.kind
                self._reset_lanes([0], reason)
            if xq is not None:
                xq(xbuf, out=xv)
            invoke()
            for vin, vout in plain:
                vin[...] = vout
            for vin, vout, cast in casts:
                cast(vout, out=vin)
            if gated:
                self._carry_gated(gated, steps + offset + 1, None)
            if sliding:
                add(steps, ones, out=steps)
                n = steps.item(lane)
            else:
                n = steps.item(0) + 1
                steps[0] = n
            self.samples_seen += 1
            y = yv[lane].copy() if ycheck else ydq(yv)[lane].copy()
            pred = Prediction(y, n, 0, seq.item(lane), out, reason, warmup=n <= warm_n)
            countdown -= 1
            if countdown <= 0 or (ycheck and not isfinite(vdot(y, y))):
                countdown = every
                bad = self._nonfinite_lanes(None)
                if bad:
                    self._reset_lanes(bad, "nonfinite")
                    pred.fault = "nonfinite_state" if lane in bad else None
            return pred

        return step

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
        if self._xq is not None:
            self._xq(xb, out=self._xv)
        self._invoke()
        everyone = bool(mask.all())
        age = self.schedule.steps + self._offset + 1
        for s in self._states:
            if s.spec.warmup:
                self._carry_gated([s], age, mask)
                continue
            src = s.vout if s.cast is None else s.cast(s.vout)
            if everyone:
                s.vin[...] = src
            else:
                np.copyto(s.vin, src, where=mask.reshape((-1,) + (1,) * len(s.spec.shape)))
        self.schedule.steps[mask] += 1
        self.samples_seen += int(mask.sum())
        y = self._read_y()
        y[~mask] = np.nan
        faults = np.zeros(self.lanes, bool)
        self._countdown -= 1
        bad = []
        if self._countdown <= 0 or (self._ycheck and not np.isfinite(y[mask]).all()):
            self._countdown = STATE_CHECK_EVERY
            bad = self._nonfinite_lanes(mask)
        if bad:
            faults[bad] = True
            self._reset_lanes(bad, "nonfinite")
        steps = self.schedule.steps.copy()
        return LanePredictions(y, steps, self.schedule.seq.copy(), mask, rejected, faults,
                               self._out, warmup=steps <= self._warmup_n)

    def _carry_gated(self, states, age: np.ndarray, mask: np.ndarray | None) -> None:
        """Carry states with a ``warmup`` only in lanes past it (``age`` ``[lanes]``: samples
        since reset after this step) and in ``mask``."""
        for s in states:
            keep = carry_mask(age, s.spec.warmup) if mask is None else carry_mask(age, s.spec.warmup) & mask
            src = s.vout if s.cast is None else s.cast(s.vout)
            np.copyto(s.vin, src, where=keep.reshape((-1,) + (1,) * len(s.spec.shape)))

    def _zero_sample(self) -> None:
        """A zero sample (in the model's normalised input space) into every lane."""
        if self._xq is None:
            self._xv[...] = 0.0
        else:
            self._xq(np.zeros_like(self._xbuf), out=self._xv)

    def _nonfinite_lanes(self, mask: np.ndarray | None) -> list[int]:
        """The lanes (of ``mask``, or all) whose carried state (the state inputs, after
        the carry) has NaN/Inf."""
        ok = np.ones(self.lanes, bool)
        for s in self._states:
            if s.check:
                ok &= np.isfinite(s.vin.reshape(self.lanes, -1)).all(axis=1)
        return np.flatnonzero(~ok if mask is None else ~ok & mask).tolist()

    def _read_y(self) -> np.ndarray:
        """The output of every lane ``[lanes, units]`` as real values (a copy)."""
        return self._yv.copy() if self._ydq is None else self._ydq(self._yv).copy()

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
        """Write the zero state into the given lanes' state inputs; a full reset of a
        window-head stream writes each lane's warm-up state (``runtime.window``)."""
        full = self._warm is not None and len(lanes) == self.lanes
        for k, s in enumerate(self._states):
            s.vin[lanes] = self._warm[k][lanes] if full else s.zero
        self._offset[lanes] = lane_offsets(self.lanes, 0)[lanes] if full else 0

    # -- snapshots -----------------------------------------------------------------
    def snapshot(self) -> StateSnapshot:
        """The carried state, dequantized to float32 ``[lanes, *shape]`` per state (lanes
        whose state is non-finite are reset first: such a state is never exported)."""
        bad = self._nonfinite_lanes(None)
        if bad:
            self._reset_lanes(bad, "nonfinite")
        states = {s.spec.name: s.tin.to_real(s.vin).copy() for s in self._states}
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
            s.tin.to_raw(np.asarray(snap.states[s.spec.name]), s.vin)
        last_ms = snap.extra.get("last_sample_ms")
        self.schedule.restore(snap.steps, None if last_ms is None else last_ms / 1000.0)
        if self._warm is not None:
            self._offset[:] = lane_offsets(self.lanes, self.schedule.phase)
        self.samples_seen = int(snap.samples_seen)
        self.last_frame_seq = int(snap.last_frame_seq)

    # -- one lane at a time (many streams) -----------------------------------------
    def lane_state(self, lane: int) -> StreamState:
        """Lane ``lane``'s state as a ``StreamState`` (see ``lane_states``)."""
        return self.lane_states([lane])[0]

    def lane_states(self, lanes: list[int]) -> list[StreamState]:
        """The given lanes' states as ``StreamState``s (float32 copies; a non-finite
        state is reset first), with one look at every lane, not one per lane.
        ``samples`` is left 0: the caller counts per stream."""
        bad = set(self._nonfinite_lanes(None)) & set(lanes)
        if bad:
            self._reset_lanes(sorted(bad), "nonfinite")
        real = {s.spec.name: s.tin.to_real(s.vin[lanes]) for s in self._states}
        sched = self.schedule
        steps, seq, last_t = (sched.steps[lanes].tolist(), sched.seq[lanes].tolist(),
                              sched.last_t[lanes].tolist())
        return [StreamState({name: arr[k].copy() for name, arr in real.items()},
                            steps=steps[k], seq=seq[k], last_t=last_t[k])
                for k in range(len(lanes))]

    def copy_lanes_to(self, other: "Engine", src, dst) -> None:
        """Lanes ``src`` of this engine into lanes ``dst`` of ``other`` (loaded from the
        same model and policy): carried state as stored, steps, sequence, last sample
        time. Many streams step a few lanes of a big batch in a smaller engine this way."""
        for a, b in zip(self._states, other._states):
            b.vin[dst] = a.vin[src]
        sa, sb = self.schedule, other.schedule
        sb.steps[dst], sb.seq[dst], sb.last_t[dst] = sa.steps[src], sa.seq[src], sa.last_t[src]
        other._offset[dst] = self._offset[src]

    def load_lane(self, lane: int, state: StreamState | None) -> None:
        """Put ``state`` into lane ``lane`` (None: the zero state, step 0, sequence 0);
        ``StateCorruptError`` if it does not fit the model or is not finite."""
        sched = self.schedule
        if state is None:
            self._clear([lane])
            sched.steps[lane], sched.seq[lane], sched.last_t[lane] = 0, 0, np.nan
            return
        want = {s.spec.name: tuple(s.spec.shape) for s in self._states}
        got = {k: tuple(np.shape(v)) for k, v in state.states.items()}
        if got != want or not state.is_finite():
            raise StateCorruptError(f"stream state does not fit this engine: states {got}, "
                                    f"expected {want}, finite")
        for s in self._states:
            s.tin.to_raw(np.asarray(state.states[s.spec.name], np.float32), s.vin[lane])
        sched.steps[lane], sched.seq[lane], sched.last_t[lane] = \
            state.steps, state.seq, state.last_t


# A plain float tensor: the "real" side of AffineCast.between.
_REAL = BoundTensor(name="real", index=-1, shape=(), dtype=np.dtype(np.float32))


def warmup_payload(artifacts_dir: str | os.PathLike) -> np.ndarray | None:
    """A window-head model's lane states after a full reset, as this engine puts them
    (default variant, dequantized), in the manifest's state order: ``[T, state elements]``
    float32 (what ``export-c`` writes for firmware); None for other models."""
    engine = Engine.load(artifacts_dir)
    if engine._warm is None:
        return None
    snap = engine.snapshot()
    return np.concatenate([np.asarray(snap.states[s.name], np.float32).reshape(engine.lanes, -1)
                           for s in engine.contract.states], axis=1)
