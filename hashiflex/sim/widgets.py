"""A waveform viewer for Jupyter (ipywidgets + matplotlib) over a :class:`hashiflex.sim.vcd.Trace`.

``WaveViewer(read_vcd("trace.vcd"), design)`` shows: a signal picker (hierarchy drop-down and a regex search), a
cycle-window slider with zoom buttons, the waveforms (bits as steps, buses as labelled segments), a cursor with the
value of every picked signal, and the ready/valid decoder (transfers, stalls, starved cycles per stream in the
window, pixels per layer and images in flight when the design is given). Everything it draws is also callable without a browser:
:meth:`WaveViewer.render` returns the figure, :meth:`WaveViewer.values_at` the cursor table.
"""
from __future__ import annotations

import html

import numpy as np

from .vcd import UNKNOWN, Trace, layer_activity, stream_stats

DEFAULT_PICKS = (r"^TOP\.in_(valid|ready|bits_0)$", r"^TOP\.out_(valid|ready|bits_0)$")


def _fmt(v, width: int) -> str:
    if v == UNKNOWN:
        return "x"
    return str(int(v)) if width <= 16 else hex(int(v))


class WaveViewer:
    def __init__(self, trace: Trace, design: dict | None = None, picks: list[str] | None = None,
                 max_rows: int = 16):
        import ipywidgets as W

        self.trace, self.design, self.max_rows = trace, design, max_rows
        cyc = trace.cycles
        lo, hi = (int(cyc.min()), int(cyc.max())) if len(cyc) else (0, 0)
        self.scope = W.Dropdown(options=["(all)"] + trace.scopes(), value="(all)", description="scope",
                                layout=W.Layout(width="420px"))
        self.search = W.Text(value="", placeholder="regex, e.g. conv1.*valid", description="search",
                             continuous_update=False, layout=W.Layout(width="420px"))
        self.picker = W.SelectMultiple(options=[], rows=10, description="signals", layout=W.Layout(width="420px"))
        self.window = W.IntRangeSlider(value=(lo, min(hi, lo + 64)), min=lo, max=hi, description="cycles",
                                       continuous_update=False, layout=W.Layout(width="620px"))
        self.zoom_in = W.Button(description="zoom +", layout=W.Layout(width="80px"))
        self.zoom_out = W.Button(description="zoom -", layout=W.Layout(width="80px"))
        self.cursor = W.IntSlider(value=lo, min=lo, max=hi, description="cursor", continuous_update=False,
                                  layout=W.Layout(width="620px"))
        self.plot = W.Output()
        self.table = W.HTML()
        self.decoder = W.HTML()
        self._filter()
        defaults = [n for p in (picks or DEFAULT_PICKS) for n in trace.names(p)]
        self.picker.value = tuple(dict.fromkeys(n for n in defaults if n in self.picker.options))
        for w in (self.scope, self.search):
            w.observe(lambda _: self._filter(), names="value")
        for w in (self.picker, self.window, self.cursor):
            w.observe(lambda _: self.update(), names="value")
        self.zoom_in.on_click(lambda _: self.zoom(0.5))
        self.zoom_out.on_click(lambda _: self.zoom(2.0))
        self.widget = W.VBox([W.HBox([W.VBox([self.scope, self.search, self.picker]), self.table]),
                              W.HBox([self.window, self.zoom_in, self.zoom_out]), self.cursor, self.plot,
                              self.decoder])
        self.update()

    # -- state
    def _filter(self) -> None:
        names = self.trace.names(self.search.value or None)
        if self.scope.value != "(all)":
            names = [n for n in names if n.rsplit(".", 1)[0] == self.scope.value]
        keep = tuple(n for n in self.picker.value if n in names) if self.picker.options else ()
        self.picker.options = names
        self.picker.value = keep

    def select(self, names: list[str]) -> None:
        """Pick signals by exact name (the search and scope filters are cleared first)."""
        missing = [n for n in names if n not in self.trace.signals]
        if missing:
            raise KeyError(f"not in the trace: {missing}")
        self.scope.value, self.search.value = "(all)", ""
        self._filter()
        self.picker.value = tuple(names)

    def zoom(self, factor: float) -> None:
        a, b = self.window.value
        mid, half = (a + b) / 2, max(1.0, (b - a) * factor / 2)
        lo, hi = max(self.window.min, int(mid - half)), min(self.window.max, int(mid + half))
        self.window.value = (lo, max(hi, lo + 1))

    def _mask(self) -> np.ndarray:
        a, b = self.window.value
        return self.trace.window(a, b + 1)

    def values_at(self, cycle: int | None = None) -> dict[str, int]:
        """Value of every picked signal at a cycle (default: the cursor), sampled at its rising edge."""
        cycle = self.cursor.value if cycle is None else cycle
        idx = np.nonzero(self.trace.cycles == cycle)[0]
        if not len(idx):
            return {}
        return {n: int(self.trace.sampled(n)[idx[0]]) for n in self.picker.value}

    def images_in_flight_at(self, cycle: int | None = None) -> int | None:
        """Whole images inside the design at a cycle (default: the cursor), counted from the trace's start."""
        from .vcd import images_in_flight

        cycle = self.cursor.value if cycle is None else cycle
        if "_flight" not in self.__dict__:
            try:
                self._flight = images_in_flight(self.trace, self.design)
            except KeyError:  # not a hashiflex top
                self._flight = None
        if self._flight is None:
            return None
        idx = np.nonzero(self._flight[0] == cycle)[0]
        return int(self._flight[1][idx[0]]) if len(idx) else None

    # -- drawing
    def render(self):
        """The waveform figure of the picked signals over the window, with the cursor."""
        import matplotlib.pyplot as plt

        names = list(self.picker.value)[: self.max_rows]
        m = self._mask()
        cyc = self.trace.cycles[m]
        fig, ax = plt.subplots(figsize=(10, 0.45 * max(1, len(names)) + 0.8))
        for row, n in enumerate(names):
            y0 = len(names) - 1 - row
            v = self.trace.sampled(n)[m]
            w = self.trace.signals[n].width
            if not len(cyc):
                continue
            xs = np.append(cyc, cyc[-1] + 1)
            if w == 1:
                ys = np.where(v == UNKNOWN, 0.5, v).astype(float) * 0.7 + y0 + 0.15
                ax.step(xs, np.append(ys, ys[-1]), where="post", lw=1.2, color="tab:green")
                ax.fill_between(xs, y0 + 0.15, np.append(ys, ys[-1]), step="post", color="tab:green", alpha=0.2,
                                lw=0)
            ax.axhline(y0, color="0.85", lw=0.5)
            if w > 1:
                change = np.nonzero(np.append(True, v[1:] != v[:-1]))[0]
                ends = np.append(change[1:], len(v))
                for s, e in zip(change, ends):
                    x0, x1 = cyc[s], cyc[e - 1] + 1
                    ax.fill_between([x0 + 0.1, x1 - 0.1], y0 + 0.15, y0 + 0.85,
                                    color="lightgrey" if v[s] == UNKNOWN else "lightsteelblue", lw=0)
                    if x1 - x0 >= 0.02 * (xs[-1] - xs[0]) * max(1, len(_fmt(v[s], w)) / 3):
                        ax.text((x0 + x1) / 2, y0 + 0.5, _fmt(v[s], w), ha="center", va="center", fontsize=7)
        ax.axvline(self.cursor.value + 0.5, color="tab:red", lw=1)
        ax.set_yticks([len(names) - 1 - i + 0.5 for i in range(len(names))])
        ax.set_yticklabels([n.split(".", 1)[-1] for n in names], fontsize=8)
        ax.set_ylim(0, max(1, len(names)))
        if len(cyc):
            ax.set_xlim(cyc[0], cyc[-1] + 1)
        ax.set_xlabel("cycle")
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        return fig

    def decoder_rows(self) -> list[dict]:
        """The ready/valid decoder over the window: one row per stream (and per layer with a design)."""
        a, b = self.window.value
        rows = [{"stream": s.stream, "transfers": s.transfers, "stalls": s.stalls, "starved": s.starved}
                for s in stream_stats(self.trace, a, b + 1) if s.stream.count(".") <= 3]
        if self.design is not None:
            for r in layer_activity(self.trace, self.design, a, b + 1):
                rows.append({"stream": f"layer {r['layer']} ({r['op']})", "transfers": r["beats"],
                             "stalls": r["stalls"], "starved": r["starved"], "pixels": r["pixels"]})
        return rows

    def update(self) -> None:
        import matplotlib.pyplot as plt
        from IPython.display import clear_output, display

        a, b = self.window.value
        self.cursor.min, self.cursor.max = self.window.min, self.window.max
        if not a <= self.cursor.value <= b:
            self.cursor.value = a
        vals = self.values_at()
        flight = ""
        if self.design is not None:
            n = self.images_in_flight_at()
            flight = "" if n is None else f"<br>images in flight: {n}"
        self.table.value = ("<b>cursor, cycle %d</b>%s<table>" % (self.cursor.value, flight) + "".join(
            f"<tr><td>{html.escape(n.split('.', 1)[-1])}</td><td>{_fmt(v, self.trace.signals[n].width)}</td></tr>"
            for n, v in vals.items()) + "</table>")
        rows = self.decoder_rows()
        head = "<tr><th>stream</th><th>transfers</th><th>stalls</th><th>starved</th><th>pixels</th></tr>"
        self.decoder.value = (f"<b>ready/valid decoder, cycles {a}..{b}</b><table>{head}" + "".join(
            f"<tr><td>{html.escape(r['stream'])}</td><td>{r['transfers']}</td><td>{r['stalls']}</td>"
            f"<td>{r['starved']}</td><td>{r.get('pixels', '')}</td></tr>" for r in rows) + "</table>")
        fig = self.render()
        with self.plot:
            clear_output(wait=True)
            display(fig)
        plt.close(fig)

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
