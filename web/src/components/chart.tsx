// A line chart (uPlot) that follows its container's width. New data keeps
// the user's zoom: a range chosen by dragging stays until a double click
// shows everything again.
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

export const PALETTE = ['#3b6fe0', '#e0793b', '#2e9e6a', '#b54bc7', '#d4a21c', '#1f9bb3', '#d14b6a', '#6b7280'];

export interface ChartProps {
  title: string;
  /** x values (seconds since the epoch when `time`, else steps), then one array per series. */
  data: uPlot.AlignedData;
  labels: string[];
  time: boolean;
  xLabel?: string;
  format?: (v: number) => string;
  height?: number;
  testid?: string;
}

export function Chart({ title, data, labels, time, xLabel, format, height = 200, testid }: ChartProps) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const fig = useRef<HTMLElement>(null);
  // The x range the user zoomed to, or null for all of the data.
  const zoom = useRef<{ min: number; max: number } | null>(null);
  // Scale changes made here (new data), not by the user.
  const updating = useRef(false);
  const shape = `${labels.join('\u0000')}|${time}|${xLabel}`;

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const fmt = format || ((v: number) => String(+v.toPrecision(4)));
    const opts: uPlot.Options = {
      width: Math.max(200, el.clientWidth),
      height,
      scales: { x: { time } },
      legend: { live: true },
      cursor: { points: { size: 6 } },
      axes: [
        {
          stroke: '#6b7280',
          grid: { stroke: '#eef0f3', width: 1 },
          ticks: { stroke: '#e5e7eb', width: 1 },
          label: xLabel,
          labelSize: xLabel ? 18 : 0,
          // Steps are whole numbers.
          ...(time ? {} : { incrs: [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000, 20000, 50000, 100000, 1e6] }),
          font: '11px system-ui, sans-serif',
          labelFont: '11px system-ui, sans-serif',
        },
        {
          stroke: '#6b7280',
          grid: { stroke: '#eef0f3', width: 1 },
          ticks: { stroke: '#e5e7eb', width: 1 },
          size: 56,
          space: 26,
          font: '11px system-ui, sans-serif',
          values: (_u, vals) => vals.map((v) => (v == null ? '' : fmt(v))),
        },
      ],
      hooks: {
        setScale: [
          (u, key) => {
            if (key !== 'x') return;
            const { min, max } = u.scales.x;
            // What the x axis shows, for the browser tests.
            fig.current?.setAttribute('data-x', `${min}:${max}`);
            if (updating.current) return;
            const xs = u.data[0];
            const full = !xs.length || min == null || max == null || (min <= xs[0] && max >= xs[xs.length - 1]);
            zoom.current = full ? null : { min: min!, max: max! };
            fig.current?.setAttribute('data-zoomed', String(!full));
          },
        ],
      },
      series: [
        { label: xLabel || '', value: time ? '{HH}:{mm}:{ss}' : (_u, v) => (v == null ? '—' : String(v)) },
        ...labels.map((l, i) => ({
          label: l,
          stroke: PALETTE[i % PALETTE.length],
          width: 2,
          spanGaps: true,
          points: { show: (data[0]?.length ?? 0) < 40, size: 5 },
          value: (_u: uPlot, v: number | null) => (v == null ? '—' : fmt(v)),
        })),
      ],
    };
    updating.current = true;
    const u = new uPlot(opts, data, el);
    updating.current = false;
    plot.current = u;
    // Rebuilt for a new series: the zoom stays.
    if (zoom.current) setKeepingZoom(u, data);
    const ro = new ResizeObserver(() => {
      const w = Math.max(200, el.clientWidth);
      if (Math.abs(u.width - w) > 1) u.setSize({ width: w, height });
    });
    ro.observe(el);
    return () => {
      ro.disconnect();
      u.destroy();
      plot.current = null;
    };
    // Rebuilt when the series change; data alone goes through setData.
  }, [shape, height]);

  const setKeepingZoom = (u: uPlot, d: uPlot.AlignedData) => {
    updating.current = true;
    try {
      if (!zoom.current) {
        u.setData(d);
        return;
      }
      // Scales untouched, then the zoomed x range again: y fits what it shows.
      u.setData(d, false);
      u.setScale('x', zoom.current);
    } finally {
      updating.current = false;
    }
  };

  useEffect(() => {
    if (plot.current) setKeepingZoom(plot.current, data);
  }, [data]);

  const points = data.slice(1).reduce((n, ys) => n + (ys as (number | null)[]).filter((v) => v != null).length, 0);
  return (
    <figure ref={fig} class="chart" data-testid={testid} data-points={points}>
      <figcaption class="chart-title">{title}</figcaption>
      <div ref={box} class="chart-box" />
    </figure>
  );
}
