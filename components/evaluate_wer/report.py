"""Human-readable evaluation output: a compact stdout table and a self-contained HTML report.

The HTML embeds its plots as base64 PNG so it renders anywhere (kfp UI HTML viewer, MLflow artifacts, mail)
without sidecar files.
"""

from __future__ import annotations

import base64
import html
import io


def _langs(summary: dict) -> list[str]:
    t = list(summary["target_langs"])
    return t + [lg for lg in summary["replay_langs"] if lg not in t]


def format_table(summary: dict) -> str:
    """One line per language: base/candidate WER (norm) streaming and offline, delta CI, role."""
    m, ci = summary["metrics"], summary["delta_ci"]
    head = (f"{'lang':<8} {'role':<7} {'n':>4}  {'base str':>8} {'cand str':>8} {'base off':>8} {'cand off':>8}"
            f"  {'delta [95% CI]':<26} cand CER")
    off = summary.get("offline_att_context_size")
    lines = [f"streaming att_context_size={summary['att_context_size']}, offline={off}  (WER normalised, "
             "streaming = str)", head, "-" * len(head)]
    for lg in _langs(summary) + ["overall"]:
        role = "target" if lg in summary["target_langs"] else ("replay" if lg != "overall" else "")
        b, c = m["base"], m["candidate"]
        d = ci.get(lg)
        dtxt = f"{d['delta']:+.3f} [{d['low']:+.3f},{d['high']:+.3f}]" if d else ""
        h = (summary.get("champion_delta_ci") or {}).get(lg)
        if h:  # candidate - current champion
            dtxt += f"  vs champion {h['delta']:+.3f} [{h['low']:+.3f},{h['high']:+.3f}]"
        lines.append(
            f"{lg:<8} {role:<7} {c['streaming'][lg]['n_utts']:>4}  {b['streaming'][lg]['wer_norm']:>8.3f} "
            f"{c['streaming'][lg]['wer_norm']:>8.3f} {b['offline'][lg]['wer_norm']:>8.3f} "
            f"{c['offline'][lg]['wer_norm']:>8.3f}  {dtxt:<26} {c['streaming'][lg]['cer']:.3f}"
        )
    dec = summary.get("decision")
    if dec:
        lines.append(f"gate: {'PASSED' if dec['passed'] else 'FAILED'}")
        for r in dec["rules"]:
            lines.append(f"  [{'ok' if r['passed'] else 'FAIL'}] {r['reason']}")
    return "\n".join(lines)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plots(summary: dict) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    langs = _langs(summary)
    m, ci = summary["metrics"], summary["delta_ci"]
    x = np.arange(len(langs))
    out = []

    # the gate's mode and metric (the bootstrap CI is of that delta)
    first = next(iter(ci.values()), {})
    mode, metric = first.get("mode", "streaming"), first.get("metric", "wer_norm")
    fig, ax = plt.subplots(figsize=(max(4, 1.4 * len(langs) + 2), 3.2))
    base = np.array([m["base"][mode][lg][metric] for lg in langs]) * 100
    cand = np.array([m["candidate"][mode][lg][metric] for lg in langs]) * 100
    # candidate bar error = the paired-bootstrap 95% CI of (candidate - base), drawn around the candidate
    lo = np.array([max(0.0, cand[i] - (base[i] + ci[lg]["low"] * 100)) for i, lg in enumerate(langs)])
    hi = np.array([max(0.0, (base[i] + ci[lg]["high"] * 100) - cand[i]) for i, lg in enumerate(langs)])
    ax.bar(x - 0.2, base, 0.4, label="base", color="#999999")
    ax.bar(x + 0.2, cand, 0.4, yerr=[lo, hi], capsize=4, label="candidate", color="#2b7bba")
    ax.set_xticks(x, [f"{lg}\n({'target' if lg in summary['target_langs'] else 'replay'})" for lg in langs])
    ax.set_ylabel(f"{metric} %")
    ax.set_title(f"{mode.capitalize()} {metric} at att_context_size={summary['att_context_size']}")
    ax.legend()
    out.append((f"{metric} per language, base vs candidate ({mode}; error bars: 95% CI of the delta)", _png(fig)))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(4, 1.8 * len(langs) + 2), 3.2))
    w = 0.2
    for k, (model, mode, color) in enumerate([("base", "offline", "#cccccc"), ("base", "streaming", "#888888"),
                                               ("candidate", "offline", "#9ecae1"),
                                               ("candidate", "streaming", "#2b7bba")]):
        vals = [m[model][mode][lg]["wer_norm"] * 100 for lg in langs]
        ax.bar(x + (k - 1.5) * w, vals, w, label=f"{model} {mode}", color=color)
    ax.set_xticks(x, langs)
    ax.set_ylabel("WER % (normalised)")
    ax.set_title("Streaming vs offline")
    ax.legend(fontsize=8)
    out.append(("Streaming vs offline", _png(fig)))
    plt.close(fig)

    curve = summary.get("latency_curve") or []
    if curve:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        lat = [p["latency_ms"] for p in curve]
        for lg in langs + ["overall"]:
            ys = [p["metrics"][lg]["wer_norm"] * 100 for p in curve]
            style = {"color": "black", "linewidth": 2.2} if lg == "overall" else {"linewidth": 1.2}
            ax.plot(lat, ys, marker="o", label=lg, **style)
        dep = next((p for p in curve if p["deployed"]), None)
        if dep is not None:
            ax.axvline(dep["latency_ms"], color="#b3261e", linestyle="--", linewidth=1)
            ax.annotate(f"deployed {dep['att_context_size']}", (dep["latency_ms"], ax.get_ylim()[1]),
                        textcoords="offset points", xytext=(4, -12), fontsize=8, color="#b3261e")
        for p in curve:
            ax.annotate(str(p["att_context_size"]), (p["latency_ms"], p["metrics"]["overall"]["wer_norm"] * 100),
                        textcoords="offset points", xytext=(3, 4), fontsize=7)
        ax.set_xscale("log")  # lookaheads grow roughly geometrically (80 ... 1120 ms): keep points apart
        ax.set_xticks(lat, [f"{v:.0f}" for v in lat])
        ax.minorticks_off()
        ax.set_xlabel("algorithmic latency, ms (chunk = (right context + 1) x subsampling x hop)")
        ax.set_ylabel("WER % (normalised)")
        ax.set_title("Candidate: streaming WER vs latency (every supported att_context_size)")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        out.append(("Candidate WER vs latency", _png(fig)))
        plt.close(fig)
    return out


def render_html(summary: dict) -> str:
    """A self-contained HTML page: decision, plots, metric tables."""
    e = html.escape
    dec = summary.get("decision") or {"passed": False, "rules": []}
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>ASR evaluation</title><style>",
        "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
        "td.l{text-align:left}.ok{color:#17803d}.fail{color:#b3261e;font-weight:bold}",
        "</style></head><body>",
        "<h1>ASR evaluation: base vs candidate</h1>",
        f"<p>base: <code>{e(summary['base_model'])}</code><br>candidate: <code>{e(summary['candidate_model'])}"
        f"</code><br>test set: <code>{e(summary['manifest'])}</code> ({summary['n_utts']} utterances); "
        f"streaming at att_context_size={e(str(summary['att_context_size']))}, pieces of "
        f"{summary['stream_piece_s']} s; offline (whole utterances) at att_context_size="
        f"{e(str(summary.get('offline_att_context_size')))}<br>current champion: "
        f"<code>{e(str(summary.get('champion_model') or 'none (compared with the base)'))}</code></p>",
        f"<h2>Gate: <span class='{'ok' if dec['passed'] else 'fail'}'>"
        f"{'PASSED' if dec['passed'] else 'FAILED'}</span></h2>",
        "<table><tr><th>rule</th><th>value</th><th>threshold</th><th>outcome</th><th>reason</th></tr>",
    ]
    for r in dec["rules"]:
        val = "" if r["value"] is None else f"{r['value']:.4f}"
        thr = "" if r["threshold"] is None else f"{r['threshold']:.4f}"
        cls = "ok" if r["passed"] else "fail"
        parts.append(f"<tr><td class='l'>{e(r['rule'])}</td><td>{val}</td><td>{thr}</td>"
                     f"<td class='{cls}'>{'pass' if r['passed'] else 'FAIL'}</td><td class='l'>{e(r['reason'])}</td></tr>")
    parts.append("</table>")
    for title, png in _plots(summary):
        parts.append(f"<h3>{e(title)}</h3><img alt='{e(title)}' src='data:image/png;base64,{png}'>")
    parts.append("<h2>Metrics</h2><table><tr><th>model</th><th>mode</th><th>language</th><th>n</th>"
                 "<th>WER raw</th><th>WER norm</th><th>CER</th><th>S</th><th>D</th><th>I</th><th>ref words</th></tr>")
    for model, modes in summary["metrics"].items():
        for mode, langs in modes.items():
            for lg, s in langs.items():
                parts.append(
                    f"<tr><td class='l'>{e(model)}</td><td class='l'>{e(mode)}</td><td class='l'>{e(lg)}</td>"
                    f"<td>{s['n_utts']}</td><td>{s['wer_raw'] * 100:.2f}</td><td>{s['wer_norm'] * 100:.2f}</td>"
                    f"<td>{s['cer'] * 100:.2f}</td><td>{s['substitutions']}</td><td>{s['deletions']}</td>"
                    f"<td>{s['insertions']}</td><td>{s['n_ref_words']}</td></tr>")
    first = next(iter(summary["delta_ci"].values()), {})
    parts.append(f"</table><h2>Paired bootstrap ({e(first.get('mode', 'streaming'))}, candidate - base, "
                 f"{e(first.get('metric', 'wer_norm'))})</h2>"
                 "<table><tr><th>language</th><th>delta</th><th>95% CI</th><th>n</th><th>resamples</th></tr>")
    for lg, d in summary["delta_ci"].items():
        parts.append(f"<tr><td class='l'>{e(lg)}</td><td>{d['delta'] * 100:+.2f}</td>"
                     f"<td>[{d['low'] * 100:+.2f}, {d['high'] * 100:+.2f}]</td><td>{d['n_utts']}</td>"
                     f"<td>{d['n_resamples']}</td></tr>")
    parts.append("</table>")
    curve = summary.get("latency_curve") or []
    if curve:
        langs = _langs(summary) + ["overall"]
        parts.append("<h2>Candidate WER vs latency (streaming, WER norm %)</h2><table><tr>"
                     "<th>att_context_size</th><th>latency ms</th>" + "".join(f"<th>{e(lg)}</th>" for lg in langs)
                     + "</tr>")
        for p in curve:
            mark = " (deployed)" if p["deployed"] else ""
            parts.append(f"<tr><td class='l'>{e(str(p['att_context_size']))}{mark}</td><td>{p['latency_ms']:.0f}</td>"
                         + "".join(f"<td>{p['metrics'][lg]['wer_norm'] * 100:.2f}</td>" for lg in langs) + "</tr>")
        parts.append("</table><p>Latency is algorithmic: a steady-state chunk covers (right context + 1) encoder "
                     "frames; compute time comes on top. Data: latency_curve.json.</p>")
    t = summary.get("timings_s") or {}
    if t:
        parts.append("<h2>Evaluation speed</h2><table><tr><th>model</th><th>offline s</th><th>offline RTFx</th>"
                     "<th>streaming s</th><th>streaming RTFx</th></tr>")
        for model, v in t.items():
            parts.append(f"<tr><td class='l'>{e(model)}</td><td>{v.get('offline', 0):.1f}</td>"
                         f"<td>{v.get('offline_rtfx', 0):.1f}</td><td>{v.get('streaming', 0):.1f}</td>"
                         f"<td>{v.get('streaming_rtfx', 0):.1f}</td></tr>")
        parts.append(f"</table><p>{summary.get('stream_batch', 1)} concurrent streams per batch; "
                     f"{summary.get('audio_seconds', 0):.1f} s of audio per model and mode.</p>")
    parts.append("<p>WER values in % points; normalised = NFC, no punctuation (any script), "
                 "case-folded, language tags stripped. Per-utterance results: utterances.jsonl.</p></body></html>")
    return "\n".join(parts)
