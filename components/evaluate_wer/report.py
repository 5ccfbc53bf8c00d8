"""Human-readable evaluation output: a compact stdout table and a self-contained HTML report (the jinja2
template report.html.j2).

The HTML embeds its plots as base64 PNG so it renders anywhere (kfp UI HTML viewer, MLflow artifacts, mail)
without sidecar files.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

from components.common.evaluation import EvaluationSummary


def _langs(summary: dict) -> list[str]:
    t = list(summary["target_langs"])
    return t + [lg for lg in summary["replay_langs"] if lg not in t]


def format_table(summary: dict) -> str:
    """One line per language: base/candidate WER (norm) streaming and offline, delta CI, role."""
    m, ci = summary["metrics"], summary["delta_ci"]
    head = (
        f"{'lang':<8} {'role':<7} {'n':>4}  {'base str':>8} {'cand str':>8} {'base off':>8} {'cand off':>8}"
        f"  {'delta [95% CI]':<26} cand CER"
    )
    off = summary.get("offline_att_context_size")
    lines = [
        f"streaming att_context_size={summary['att_context_size']}, offline={off}  (WER normalised, "
        "streaming = str)",
        head,
        "-" * len(head),
    ]
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
    """(caption, base64 PNG) per figure: the gate's delta, streaming vs offline, and the latency curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = [_gate_plot(plt, summary), _modes_plot(plt, summary)]
    if summary.get("latency_curve"):
        out.append(_latency_plot(plt, summary))
    return out


def _figure(plt, fig, caption: str) -> tuple[str, str]:
    """(caption, the figure as base64 PNG); the figure is closed."""
    try:
        return caption, _png(fig)
    finally:
        plt.close(fig)


def _gate_plot(plt, summary: dict) -> tuple[str, str]:
    """Base vs candidate per language in the gate's mode and metric (the bootstrap CI is of that delta)."""
    import numpy as np

    langs = _langs(summary)
    m, ci = summary["metrics"], summary["delta_ci"]
    x = np.arange(len(langs))
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
    caption = f"{metric} per language, base vs candidate ({mode}; error bars: 95% CI of the delta)"
    return _figure(plt, fig, caption)


def _modes_plot(plt, summary: dict) -> tuple[str, str]:
    """Normalised WER per language for both models, offline and streaming side by side."""
    import numpy as np

    langs = _langs(summary)
    m = summary["metrics"]
    x = np.arange(len(langs))
    fig, ax = plt.subplots(figsize=(max(4, 1.8 * len(langs) + 2), 3.2))
    w = 0.2
    for k, (model, mode, color) in enumerate(
        [
            ("base", "offline", "#cccccc"),
            ("base", "streaming", "#888888"),
            ("candidate", "offline", "#9ecae1"),
            ("candidate", "streaming", "#2b7bba"),
        ]
    ):
        vals = [m[model][mode][lg]["wer_norm"] * 100 for lg in langs]
        ax.bar(x + (k - 1.5) * w, vals, w, label=f"{model} {mode}", color=color)
    ax.set_xticks(x, langs)
    ax.set_ylabel("WER % (normalised)")
    ax.set_title("Streaming vs offline")
    ax.legend(fontsize=8)
    return _figure(plt, fig, "Streaming vs offline")


def _latency_plot(plt, summary: dict) -> tuple[str, str]:
    """The candidate's streaming WER at every supported lookahead, the deployed one marked."""
    langs, curve = _langs(summary), summary["latency_curve"]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    lat = [p["latency_ms"] for p in curve]
    for lg in langs + ["overall"]:
        ys = [p["metrics"][lg]["wer_norm"] * 100 for p in curve]
        style = {"color": "black", "linewidth": 2.2} if lg == "overall" else {"linewidth": 1.2}
        ax.plot(lat, ys, marker="o", label=lg, **style)
    dep = next((p for p in curve if p["deployed"]), None)
    if dep is not None:
        ax.axvline(dep["latency_ms"], color="#b3261e", linestyle="--", linewidth=1)
        ax.annotate(
            f"deployed {dep['att_context_size']}",
            (dep["latency_ms"], ax.get_ylim()[1]),
            textcoords="offset points",
            xytext=(4, -12),
            fontsize=8,
            color="#b3261e",
        )
    for p in curve:
        ax.annotate(
            str(p["att_context_size"]),
            (p["latency_ms"], p["metrics"]["overall"]["wer_norm"] * 100),
            textcoords="offset points",
            xytext=(3, 4),
            fontsize=7,
        )
    ax.set_xscale("log")  # lookaheads grow roughly geometrically (80 ... 1120 ms): keep points apart
    ax.set_xticks(lat, [f"{v:.0f}" for v in lat])
    ax.minorticks_off()
    ax.set_xlabel("algorithmic latency, ms (chunk = (right context + 1) x subsampling x hop)")
    ax.set_ylabel("WER % (normalised)")
    ax.set_title("Candidate: streaming WER vs latency (every supported att_context_size)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _figure(plt, fig, "Candidate WER vs latency")


TEMPLATE = "report.html.j2"  # beside this module


def _num(value, spec: str) -> str:
    return "" if value is None else spec % value


def render_html(summary: EvaluationSummary | dict) -> str:
    """A self-contained HTML page (decision, plots, metric tables), rendered from the jinja2 template
    report.html.j2 (autoescaped) beside this module."""
    import jinja2

    record = summary if isinstance(summary, EvaluationSummary) else EvaluationSummary.from_dict(summary)
    view = record.to_dict()
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    decision = record.decision
    first = next(iter(record.delta_ci.values()), None)
    return env.get_template(TEMPLATE).render(
        s=record,
        passed=bool(decision and decision.passed),
        rules=decision.rules if decision else [],
        plots=_plots(view),
        num=_num,
        ci_mode=first.mode if first else "streaming",
        ci_metric=first.metric if first else "wer_norm",
        curve_langs=_langs(view) + ["overall"],
    )
