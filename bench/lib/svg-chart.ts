/** A horizontal bar chart as a standalone SVG (no dependencies), for docs/BENCHMARKS.md. */
export interface Bar {
  label: string;
  value: number;
  /** Printed at the end of the bar instead of the number, e.g. `4.1 ms`. */
  text: string;
  /** The daemon's bars are drawn in the accent colour. */
  highlight?: boolean;
}

export interface BarGroup {
  title: string;
  bars: Bar[];
}

export interface ChartOptions {
  title: string;
  /** Logarithmic bar lengths, for figures that span several orders of magnitude. */
  log?: boolean;
  note?: string;
}

const escape = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export function barChart(groups: BarGroup[], opts: ChartOptions): string {
  const width = 760;
  const labelW = 250;
  const barMax = width - labelW - 110;
  const rowH = 22;
  const values = groups.flatMap((g) => g.bars.map((b) => b.value)).filter((v) => v > 0);
  const max = Math.max(...values);
  const min = Math.min(...values);
  const floor = opts.log ? Math.pow(10, Math.floor(Math.log10(min)) - 0.3) : 0;
  const length = (v: number) =>
    v <= 0 ? 0 : opts.log ? (barMax * Math.log10(v / floor)) / Math.log10(max / floor) : (barMax * v) / max;
  const out: string[] = [];
  let y = 40;
  for (const g of groups) {
    out.push(`<text x="10" y="${y}" class="group">${escape(g.title)}</text>`);
    y += 10;
    for (const b of g.bars) {
      const w = Math.max(1, length(b.value));
      out.push(`<text x="${labelW - 8}" y="${y + 15}" class="label" text-anchor="end">${escape(b.label)}</text>`);
      out.push(`<rect x="${labelW}" y="${y + 3}" width="${w.toFixed(1)}" height="${rowH - 6}" class="${b.highlight ? 'ours' : 'peer'}"/>`);
      out.push(`<text x="${(labelW + w + 6).toFixed(1)}" y="${y + 15}" class="value">${escape(b.text)}</text>`);
      y += rowH;
    }
    y += 18;
  }
  if (opts.note) {
    out.push(`<text x="10" y="${y}" class="note">${escape(opts.note)}</text>`);
    y += 14;
  }
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y}" viewBox="0 0 ${width} ${y}" font-family="sans-serif">`,
    '<style>.title{font-size:15px;font-weight:bold}.group{font-size:13px;font-weight:bold}.label,.value{font-size:12px}.note{font-size:11px;fill:#555}.ours{fill:#2b7bb9}.peer{fill:#b0b0b0}</style>',
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="20" class="title">${escape(opts.title)}</text>`,
    ...out,
    '</svg>',
    '',
  ].join('\n');
}
