"""CLI: `python -m components.synthesize_corpus --out data` writes the espeak-ng demo corpus (el, bg, es)."""

from __future__ import annotations

import argparse
import json
import sys

from components.common.languages import parse_langs
from components.common.logs import add_verbosity_flags, configure_from
from components.synthesize_corpus.core import DEFAULT_LANGS, summary_dict, synthesize_corpus
from components.synthesize_corpus.grammar import supported_langs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m components.synthesize_corpus",
        description="Synthesize the multilingual demo corpus with espeak-ng (raw-dataset layout: "
        "audio/<lang>/<speaker>/<id>.wav + metadata.csv + corpus.json). Re-running with the same "
        "arguments into a complete corpus does nothing.",
    )
    p.add_argument("--out", required=True, help="output folder (e.g. data)")
    p.add_argument(
        "--langs",
        default=",".join(DEFAULT_LANGS),
        help=f"comma-separated locales (supported: {', '.join(supported_langs())})",
    )
    p.add_argument("--n-train", type=int, default=500, help="train clips per language (default 500)")
    p.add_argument("--n-val", type=int, default=20, help="val clips per language (default 20)")
    p.add_argument("--n-test", type=int, default=60, help="test clips per language (default 60)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--renditions", type=int, default=2, help="speakers per training sentence (default 2)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    p.add_argument("--force", action="store_true", help="rebuild even if the corpus is already complete")
    add_verbosity_flags(p)
    a = p.parse_args(argv)
    configure_from(a)
    try:
        summary = synthesize_corpus(
            a.out,
            langs=parse_langs(a.langs),
            n_train=a.n_train,
            n_val=a.n_val,
            n_test=a.n_test,
            seed=a.seed,
            renditions=a.renditions,
            workers=a.workers,
            force=a.force,
            progress=not a.quiet,
        )
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary_dict(summary), ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
