"""Renders the panels of deploy/grafana/fedsender.json to a PNG from a series
of /metrics scrapes, without Grafana or Prometheus: it evaluates the few
PromQL forms the dashboard uses (sum/max [by], rate/increase, topk,
histogram_quantile) over the scrapes. docs/img/fedsender-dashboard.png was
made with it.

    python3 render.py fedsender.json SCRAPE_DIR out.png

SCRAPE_DIR holds one Prometheus text file per second (0000.txt, 0001.txt,
...), e.g. from `for i in $(seq -w 0 99); do curl -s 127.0.0.1:9464/metrics
> $i.txt; sleep 1; done`. Needs numpy and matplotlib (Debian:
python3-matplotlib)."""
import json, re, sys, glob, os
import numpy as np
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

dash = json.load(open(sys.argv[1]))
files = sorted(glob.glob(os.path.join(sys.argv[2], "*.txt")))
out = sys.argv[3]
T = len(files)
line_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$')
lab_re = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
data = {}  # name -> {labels tuple: array}
for t, f in enumerate(files):
    for line in open(f):
        if line.startswith("#") or not line.strip():
            continue
        m = line_re.match(line.strip())
        if not m:
            continue
        name, labels, v = m.group(1), tuple(sorted(lab_re.findall(m.group(3) or ""))), float(m.group(4))
        data.setdefault(name, {}).setdefault(labels, np.full(T, np.nan))[t] = v

RATE_W = 5  # seconds: $__rate_interval for 1 s scrapes

def select(name, matchers):
    want = dict(lab_re.findall(matchers or ""))
    want = {k: v for k, v in want.items() if "$" not in v}
    res = {}
    for labels, arr in data.get(name, {}).items():
        d = dict(labels)
        if all(d.get(k) == v for k, v in want.items()):
            res[labels] = arr
    return res

def rate(series, increase=False, whole=False):
    res = {}
    for k, a in series.items():
        r = np.full(T, np.nan)
        if whole:
            r[:] = np.nanmax(a) - np.nanmin(a) if np.isfinite(a).any() else np.nan
        else:
            for t in range(RATE_W, T):
                if np.isfinite(a[t]) and np.isfinite(a[t - RATE_W]):
                    d = a[t] - a[t - RATE_W]
                    r[t] = d if increase else d / RATE_W
        res[k] = r
    return res

def agg(op, by, series):
    groups = {}
    for k, a in series.items():
        d = dict(k)
        g = tuple((l, d.get(l, "")) for l in by) if by else ()
        groups.setdefault(g, []).append(a)
    res = {}
    for g, arrs in groups.items():
        st = np.vstack(arrs)
        with np.errstate(all="ignore"):
            allnan = np.all(np.isnan(st), axis=0)
            v = np.nansum(st, axis=0) if op == "sum" else np.nanmax(np.where(np.isnan(st), -np.inf, st), axis=0)
        v = np.where(allnan, np.nan, v)
        res[g] = v
    return res

def quantile(q, series):
    buckets = sorted(((float(dict(k)["le"]), a) for k, a in series.items()), key=lambda x: x[0])
    les = [b[0] for b in buckets]
    arr = np.vstack([b[1] for b in buckets])
    out = np.full(T, np.nan)
    for t in range(T):
        c = arr[:, t]
        if np.isnan(c).any() or c[-1] <= 0:
            continue
        rank = q * c[-1]
        i = int(np.searchsorted(c, rank, side="left"))
        if i >= len(les) - 1:
            out[t] = les[-2]
            continue
        lo, hi = (0.0 if i == 0 else les[i - 1]), les[i]
        clo = 0.0 if i == 0 else c[i - 1]
        out[t] = lo + (hi - lo) * ((rank - clo) / max(c[i] - clo, 1e-12))
    return {(): out}

def ev(expr):
    e = expr.strip()
    m = re.match(r'^histogram_quantile\(([\d.]+),\s*(.*)\)$', e, re.S)
    if m:
        return quantile(float(m.group(1)), ev(m.group(2)))
    m = re.match(r'^topk\((\d+),\s*(.*)\)$', e, re.S)
    if m:
        s = ev(m.group(2))
        top = sorted(s.items(), key=lambda kv: -np.nanmax(np.nan_to_num(kv[1], nan=-1)))[:int(m.group(1))]
        return dict(top)
    m = re.match(r'^(sum|max)(?:\s+by\s+\(([\w, ]+)\))?\s*\((.*)\)$', e, re.S)
    if m:
        by = [x.strip() for x in m.group(2).split(",")] if m.group(2) else []
        return agg(m.group(1), by, ev(m.group(3)))
    m = re.match(r'^(rate|increase)\((\w+)(\{[^}]*\})?\[([^\]]+)\]\)$', e)
    if m:
        return rate(select(m.group(2), m.group(3)), increase=m.group(1) == "increase", whole=m.group(4) == "$__range")
    m = re.match(r'^(\w+)(\{[^}]*\})?$', e)
    if m:
        return select(m.group(1), m.group(2))
    raise ValueError("unsupported expression: " + e)

def legend(fmt, key):
    d = dict(key)
    return re.sub(r'\{\{\s*(\w+)\s*\}\}', lambda m: d.get(m.group(1), ""), fmt) or "value"

def fmt_unit(v, unit):
    if v is None or not np.isfinite(v):
        return "–"
    if unit == "s":
        if v < 1:
            return f"{v*1000:.0f} ms"
        return f"{v:.1f} s"
    if unit == "ops":
        if v >= 1000:
            return f"{v/1000:.1f}k/s"
        return f"{v:.1f}/s" if v >= 10 or v == 0 else f"{v:.2f}/s"
    return f"{v:,.0f}"

BG, PANEL, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"
COLORS = ["#73bf69", "#f2cc0c", "#5794f2", "#ff780a", "#f2495c", "#b877d9", "#8ab8ff", "#fade2a", "#96d98d", "#ffb357"]
W, H = 24, max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dash["panels"])
figw = 20.0
figh = figw * (H * 30) / 1800 + 0.6
fig = plt.figure(figsize=(figw, figh), facecolor=BG)
fig.text(0.01, 1 - 0.25 / figh, f"fedsender — rendered from {T} scrapes of /metrics (1 s apart) of a live run: 30 receivers, "
         "failures injected (500s, a dead server, 429s, a slow server, dead letters, per-PDU errors) then resets",
         color=TEXT, fontsize=11, va="top")
top = 1 - 0.6 / figh
x = np.arange(T)
for p in dash["panels"]:
    g = p["gridPos"]
    pad = 0.004
    # the panel's frame, then the plot inside it, leaving room for the
    # title, the y tick labels and the x axis
    fl, fw = g["x"] / W + pad, g["w"] / W - 2 * pad
    fh = g["h"] / H * top - 2 * pad * figw / figh
    fb = top - (g["y"] + g["h"]) / H * top + pad * figw / figh
    fig.patches.append(matplotlib.patches.Rectangle((fl, fb), fw, fh, transform=fig.transFigure, facecolor=PANEL, edgecolor=GRID, lw=0.8, zorder=-10))
    fig.text(fl + 0.004, fb + fh - 0.004 * figw / figh, p["title"], color=TEXT, fontsize=10, va="top")
    title_h = 0.32 / figh
    if p["type"] == "stat":
        left, bottom, width, height = fl + 0.004, fb + 0.004, fw - 0.008, fh - title_h - 0.008
    else:
        left_m = 0.085 * (24 / g["w"]) * fw if p["type"] == "bargauge" else 0.045
        left, bottom = fl + left_m, fb + 0.35 / figh
        right_m = 0.045 if any(o["properties"][0].get("value") == "right" for o in p["fieldConfig"].get("overrides", []) if o.get("properties")) else 0.008
        width, height = fw - left_m - right_m, fh - title_h - 0.35 / figh
    ax = fig.add_axes([left, bottom, width, height], facecolor=PANEL)
    for s in ax.spines.values():
        s.set_color(GRID)
    ax.tick_params(colors=TEXT, labelsize=7)
    unit = p["fieldConfig"]["defaults"].get("unit", "short")
    series = []
    for tg in p["targets"]:
        for k, a in ev(tg["expr"]).items():
            series.append((legend(tg.get("legendFormat", ""), k), a))
    if p["type"] == "stat":
        v = series[0][1] if series else np.full(T, np.nan)
        last = v[np.isfinite(v)][-1] if np.isfinite(v).any() else np.nan
        ax.plot(x, v, color="#73bf69", alpha=0.35, lw=1)
        ax.fill_between(x, np.nan_to_num(v), color="#73bf69", alpha=0.08)
        color = "#73bf69"
        steps = p["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])
        for st in steps:
            if st["value"] is None or (np.isfinite(last) and last >= st["value"]):
                color = {"green": "#73bf69", "orange": "#ff9830", "red": "#f2495c"}.get(st["color"], color)
        ax.text(0.5, 0.5, fmt_unit(last, unit), color=color, fontsize=26, ha="center", va="center", transform=ax.transAxes, weight="bold")
        ax.set_xticks([]); ax.set_yticks([])
        for sp in ax.spines.values():
            sp.set_visible(False)
        continue
    if p["type"] == "bargauge":
        items = sorted(((float(l) if l not in ("+Inf", "") else float("inf"), l, np.nanmax(a) if np.isfinite(a).any() else 0) for l, a in series))
        def dur(v):
            if v < 60: return f"{v:g} s"
            if v < 7200: return f"{v/60:g} min"
            if v < 172800: return f"{v/3600:.3g} h"
            return f"{v/86400:.3g} d"
        labels = [("≤ " + dur(lv)) if lv != float("inf") else "all" for lv, l, _ in items]
        vals = [v for _, _, v in items]
        ax.barh(range(len(vals)), vals, color="#5794f2", alpha=0.85)
        ax.set_yticks(range(len(vals)), labels, fontsize=7, color=TEXT)
        ax.invert_yaxis()
        for i, v in enumerate(vals):
            ax.text(v, i, f" {v:.0f}", color=TEXT, va="center", fontsize=7)
        ax.set_xlabel("failures whose backoff was at most (cumulative)", color=TEXT, fontsize=7)
        continue
    stacked = p["fieldConfig"]["defaults"].get("custom", {}).get("stacking", {}).get("mode") == "normal"
    if p["fieldConfig"]["defaults"].get("custom", {}).get("scaleDistribution", {}).get("type") == "log":
        ax.set_yscale("log")
    base = np.zeros(T)
    right = {o["matcher"]["options"]: {pp["id"]: pp["value"] for pp in o["properties"]}
             for o in p["fieldConfig"].get("overrides", []) if o["matcher"]["id"] == "byName"}
    ax2 = None
    handles = []
    for i, (name, a) in enumerate(series):
        c = COLORS[i % len(COLORS)]
        if right.get(name, {}).get("custom.axisPlacement") == "right":
            if ax2 is None:
                ax2 = ax.twinx()
                ax2.tick_params(colors=TEXT, labelsize=7)
                u2 = right[name].get("unit", unit)
                ax2.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _, u2=u2: fmt_unit(v, u2)))
                for sp in ax2.spines.values():
                    sp.set_color(GRID)
            handles += ax2.plot(x, a, color=c, lw=1.2, label=name, ls="--")
            continue
        if stacked:
            top_ = base + np.nan_to_num(a)
            ax.fill_between(x, base, top_, color=c, alpha=0.25, lw=0)
            handles += ax.plot(x, top_, color=c, lw=1.2, label=name)
            base = top_
        else:
            handles += ax.plot(x, a, color=c, lw=1.2, label=name)
    ax.grid(color=GRID, lw=0.5)
    ax.set_xlim(0, T - 1)
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _, unit=unit: fmt_unit(v, unit)))
    ax.set_xlabel("seconds", color=TEXT, fontsize=7, labelpad=1)
    if handles:
        ax.legend(handles=handles, loc="upper left", fontsize=7, facecolor=PANEL, edgecolor=GRID, labelcolor=TEXT, ncol=min(4, len(handles)), framealpha=0.8)
fig.savefig(out, dpi=100, facecolor=BG)
print("wrote", out)
