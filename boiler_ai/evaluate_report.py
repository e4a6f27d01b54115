"""The HTML report of `boiler-ai evaluate --report DIR`: the summary, per-scenario rows and, for the first seed
of each scenario, PNG plots of the AI run beside the DCS alone (efficiency and heat rate, O2, CO, NOx, steam
temperatures, AI mode, per-MV offsets from the DCS setpoints). Needs matplotlib (the `report` extra)."""

from __future__ import annotations

import html
import json
from pathlib import Path


def write_report(folder: Path, summary: dict, runs: list[dict]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "evaluation.json").write_text(json.dumps({"summary": summary, "runs": [
        {k: v for k, v in r.items() if k != "series"} for r in runs]}, indent=2) + "\n")
    figures = []
    seen = set()
    for r in runs:
        if r["scenario"] in seen:
            continue
        seen.add(r["scenario"])
        ai, dcs = r["series"]["ai"], r["series"]["dcs"]
        panels = [("boiler efficiency (%)", "efficiency_pct"), ("unit heat rate (kJ/kWh)", "heat_rate_kj_kwh"),
                  ("O2 (%)", "o2_pct"), ("CO (ppm)", "co_ppm"), ("NOx (mg/Nm3)", "nox_mg_nm3"),
                  ("main steam (degC)", "main_steam_temp_c"), ("hot reheat (degC)", "reheat_steam_temp_c")]
        fig, axes = plt.subplots(len(panels) + 2, 1, figsize=(10, 2.0 * (len(panels) + 2)), sharex=True)
        for ax, (label, key) in zip(axes, panels):
            ax.plot(dcs["t_h"], dcs[key], label="DCS alone", lw=0.8, color="0.5")
            ax.plot(ai["t_h"], ai[key], label="AI", lw=0.8, color="tab:blue")
            ax.set_ylabel(label, fontsize=8)
        axes[0].legend(fontsize=8, loc="upper right")
        t_ai = ai["t_h"][:len(r["series"]["ai_mode"])]
        axes[-2].step(t_ai, r["series"]["ai_mode"][:len(t_ai)], where="post", color="tab:green")
        axes[-2].set_ylabel("AI mode", fontsize=8)
        for mv, offsets in r["series"]["offsets"].items():
            if any(abs(v) > 1e-9 for v in offsets):
                axes[-1].plot(t_ai, offsets[:len(t_ai)], lw=0.8, label=mv)
        axes[-1].set_ylabel("offset from DCS", fontsize=8)
        axes[-1].set_xlabel("simulated hours")
        if axes[-1].lines:
            axes[-1].legend(fontsize=6, ncol=3, loc="upper right")
        fig.suptitle(f"{r['scenario']} seed {r['seed']}: efficiency {r['efficiency_gain_pct_pt']:+.3f} pct-pt, "
                     f"heat rate {r['heat_rate_gain_pct']:+.3f} %")
        fig.tight_layout()
        name = f"{r['scenario']}_{r['seed']}.png"
        fig.savefig(folder / name, dpi=80)
        plt.close(fig)
        figures.append(name)
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{', '.join(map(str, v['seeds']))}</td>"
        f"<td>{v['efficiency_gain_pct_pt']:+.3f}</td><td>{v['heat_rate_gain_pct']:+.3f}</td>"
        f"<td>{v['oracle_heat_rate_headroom_pct']:.3f}</td><td>{v['nox_ratio']:.3f}</td>"
        f"<td>{v['ai_time_share']:.1%}</td><td>{v['guard_blocks']}</td><td>{v['releases']}</td></tr>"
        for name, v in summary["per_scenario"].items())
    keys = [k for k in summary if k != "per_scenario"]
    head = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(summary[k]))}</td></tr>" for k in keys)
    images = "".join(f'<p><img src="{html.escape(f)}" alt="{html.escape(f)}"></p>' for f in figures)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>boiler-ai evaluate</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 8px;text-align:left;border-bottom:1px solid #ddd}}
</style></head><body><h1>Closed-loop evaluation on held-out seeds</h1>
<p>The policy through the real controller core on the stepped plant, against the DCS alone and the steady-state
oracle on the same scenarios and seeds; true (noise-free) performance, every simulated second.</p>
<table>{head}</table><h2>Per scenario</h2><table><tr><th>scenario</th><th>seeds</th><th>efficiency pct-pt</th>
<th>heat rate %</th><th>oracle heat rate %</th><th>NOx ratio</th><th>AI mode</th><th>guard blocks</th>
<th>releases</th></tr>{rows}</table><h2>First seed of each scenario</h2>{images}</body></html>
"""
    out = folder / "report.html"
    out.write_text(page, encoding="utf-8")
    return out
