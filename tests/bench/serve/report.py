"""The targets a run is judged by, the printed table, and outputs/bench/serve.json + serve.html (latency CDF)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np


def targets(res: dict, big: int) -> list[dict]:
    """Each figure the run measured, its target and whether it was met (`big`: the largest stream level)."""
    one, many = res["levels"].get("1 stream"), res["levels"].get(f"{big} streams")
    base = res["in_process"]
    out = []
    if one:
        out.append(
            {
                "name": "Triton p50 / in-process p50 (1 stream)",
                "value": one["p50_ms"] / base["p50_ms"],
                "target": "<= 1.25",
            }
        )
    if one and many:
        out.append(
            {
                "name": f"{big}-stream / 1-stream chunks/s",
                "value": many["chunks_per_s"] / one["chunks_per_s"],
                "target": ">= 4",
            }
        )
    if res.get("paired", {}).get("P1"):
        out.append(
            {
                "name": "P1: Triton p50 / in-process p50, 1 stream (median of pairs)",
                "value": res["paired"]["P1"]["median"],
                "target": "<= 1.10",
            }
        )
    if res.get("paired", {}).get("P2_prime"):
        out.append(
            {
                "name": f"P2': Triton / stream_step_batch chunks/s, {big} streams (median)",
                "value": res["paired"]["P2_prime"]["median"],
                "target": ">= 0.85",
            }
        )
    if res.get("noisy_neighbour"):
        out.append(
            {
                "name": "noisy neighbour: others' p99 growth",
                "value": res["noisy_neighbour"]["p99_growth"],
                "target": "<= 2",
            }
        )
    for n, v in res.get("gateway_added_p50_ms", {}).items():
        limit = max(1.5, 0.05 * base["p50_ms"])
        out.append(
            {
                "name": f"gateway added p50, {n} stream(s) (ms, median)",
                "value": v["median"],
                "target": f"<= {limit:.2f}",
            }
        )
    out.append({"name": "soak RSS growth", "value": res["soak"]["rss_growth"], "target": "< 0.10"})
    out.append({"name": "soak crashes", "value": res["soak"]["crashes"], "target": "== 0"})
    for t in out:
        t["met"] = met(t["value"], t["target"])
    return out


def met(value: float, target: str) -> bool:
    """`value` against a target written `<op> <number>` (op one of <=, >=, <, ==)."""
    op, thr = target.split()
    return {
        "<=": value <= float(thr),
        ">=": value >= float(thr),
        "<": value < float(thr),
        "==": value == float(thr),
    }[op]


def write_reports(out: Path, res: dict, lat_plot: dict[str, list[float]]) -> None:
    """serve.json and serve.html under `out`, then the targets table on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve.json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    write_html(out / "serve.html", res, lat_plot)
    print("\n== bench-serve ==")
    for t in res["targets"]:
        print(
            f"{t['name']:<42} {t['value']:8.3f}   target {t['target']:<7} {'met' if t['met'] else 'NOT MET'}"
        )
    print(f"total {res['total_s']:.0f}s; wrote {out / 'serve.json'} and {out / 'serve.html'}")


def write_html(path: Path, res: dict, lat: dict[str, list[float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, values in lat.items():
        v = np.sort(np.asarray(values) * 1000.0)
        if v.size:
            ax.plot(v, np.arange(1, v.size + 1) / v.size, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("per-chunk latency (ms, log)")
    ax.set_ylabel("fraction of chunks")
    ax.set_title(f"asr_streaming per-chunk latency ({res['chunk_ms']:.0f} ms chunks)")
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    png = base64.b64encode(buf.getvalue()).decode()
    rows = "".join(
        f"<tr><td>{k}</td><td>{v['streams']}</td><td>{v['p50_ms']:.1f}</td><td>{v['p95_ms']:.1f}</td>"
        f"<td>{v['p99_ms']:.1f}</td><td>{v['chunks_per_s']:.1f}</td><td>{v['mean_batch']:.1f}</td></tr>"
        for k, v in res["levels"].items()
    )
    checks = "".join(
        f"<tr><td>{c['name']}</td><td>{c['value']:.3g}</td><td>{c['target']}</td>"
        f"<td>{'met' if c['met'] else 'NOT met'}</td></tr>"
        for c in res["targets"]
    )
    html = f"""<!doctype html><meta charset="utf-8"><title>bench-serve</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td,th{{padding:2px 8px;text-align:right}}</style>
<h1>Triton streaming benchmark</h1>
<p>{res["model"]} ({res["model_source"]}), att_context_size {res["att_context_size"]}, {res["chunk_ms"]:.0f} ms chunks,
{res["cpu_count"]} CPUs, ASR_THREADS={res["asr_threads"]}, {res["started"]}. Command: <code>{res["command"]}</code></p>
<h2>Targets</h2><table><tr><th>figure</th><th>value</th><th>target</th><th></th></tr>{checks}</table>
<h2>Latency and throughput</h2>
<table><tr><th></th><th>streams</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>chunks/s</th><th>mean batch</th></tr>{rows}</table>
<img src="data:image/png;base64,{png}" alt="latency CDF">
<h2>Soak</h2><pre>{json.dumps(res["soak"], indent=2)}</pre>
"""
    path.write_text(html, encoding="utf-8")
