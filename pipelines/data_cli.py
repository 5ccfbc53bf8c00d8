"""`asr-data`: the data stage's command lines under one name (each is also `python -m <module>`).

asr-data synthesize ...   components.synthesize_corpus   the demo corpus (eSpeak NG)
asr-data validate ...     components.validate_data       the data contract (great-expectations)
asr-data materialize ...  components.materialize_data    a dataset version (data_rev) pulled + md5-checked
asr-data manifest ...     components.build_manifest      16 kHz WAVs + speaker-disjoint NeMo manifests
asr-data coverage ...     components.common.coverage     will the base tokenizer spell every transcript?

`asr-data <command> --help` prints that command's options.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "synthesize": "components.synthesize_corpus.__main__",
    "validate": "components.validate_data.__main__",
    "materialize": "components.materialize_data.__main__",
    "manifest": "components.build_manifest.__main__",
    "coverage": "components.common.coverage",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"asr-data: unknown command {command!r} (one of: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[command]).main(rest)


if __name__ == "__main__":
    sys.exit(main())
