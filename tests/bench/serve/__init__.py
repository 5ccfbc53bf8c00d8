"""The pieces of `tests/bench/bench_serve.py` (the Triton load benchmark): the model and audio and the in-process
reference (`model`), the server's process, metrics and one-stream client (`triton`), the closed-loop load
generator (`load`), the gateway passes (`gateway`), the measured phases of a run (`phases`) and the targets and
HTML report (`report`)."""
