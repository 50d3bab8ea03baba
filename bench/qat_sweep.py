"""Fine-tuning settings tried on zoo models: the simulated figures per epoch and at the end.

For each zoo entry and each setting (``--lr``, ``--epochs``, ``--consistency``), a copy of
the cached zoo model is fine-tuned the way ``stepwise convert`` does (distilled from the
model, on the grid of ``--bits``) and the simulated validation figures before and after
are printed as a table. An experiment script: it decides defaults, it is not a bar.

    python -m bench.qat_sweep --only lstm-mission simplernn-100 --lr 0.002 0.0005 [--bits 8]
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from bench import zoo
from pipeline.convert import calibration_set
from pipeline.finetune import copy_model
from pipeline.qat import quantization_aware_finetune


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path("build/quantbench"))
    ap.add_argument("--only", nargs="+", required=True)
    ap.add_argument("--lr", nargs="+", type=float, default=[0.002])
    ap.add_argument("--epochs", nargs="+", type=int, default=[zoo.FINETUNE_EPOCHS])
    ap.add_argument("--consistency", nargs="+", type=float, default=[3000.0])
    ap.add_argument("--restart", nargs="+", type=int, default=[4], help="qat_stream_restart")
    ap.add_argument("--bits", type=int, default=8, choices=(8, 16))
    ap.add_argument("--split", action="store_true", help="kernels as split_weights converts them")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("absl", "tensorflow", "h5py"):
        logging.getLogger(name).setLevel(logging.WARNING)
    rows = ["| model | lr | epochs | consistency | restart | before score | after score | after windows p99 / max | "
            "after streams p99 / max | accuracy before / after | kept | s |", "|" + "---|" * 12]
    entries = {e.name: e for e in zoo.entries()}
    for name in args.only:
        model, sp = zoo.trained(entries[name], args.cache)
        cfg = zoo.build_config(entries[name])
        for lr in args.lr:
            for epochs in args.epochs:
                for cons in args.consistency:
                    for restart in args.restart:
                        copy = copy_model(model)
                        tc = dataclasses.replace(cfg.train, qat_distill_learning_rate=lr, qat_epochs=epochs,
                                                 qat_consistency=cons, qat_stream_restart=restart)
                        s = quantization_aware_finetune(copy, sp, tc, calibration_set(sp.X_train, cfg.quantize),
                                                        teacher=model, bits=args.bits, split=args.split)["summary"]
                        b, a = s["validation_before"], s["validation_after"]
                        rows.append(f"| {name} | {lr} | {epochs} | {cons} | {restart} | {b['score']:.2f} | "
                                    f"{a['score']:.2f} | {a['windows_p99']:.4f} / {a['windows_max']:.4f} | "
                                    f"{a['streams_p99']:.4f} / {a['streams_max']:.4f} | {b['accuracy']:.4f} / "
                                    f"{a['accuracy']:.4f} | {s['kept']} | {s['seconds']:.0f} |")
                        print("\n".join(rows), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
