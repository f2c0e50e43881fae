// A uPlot line/bar chart of one series over time, sized to its container.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export interface TimeSeriesChartOptions {
  label: string;
  unit: string;
  height: number;
  bars?: boolean;
  color?: string;
}

export class TimeSeriesChart {
  private readonly plot: uPlot;
  private readonly resizeObserver: ResizeObserver;

  constructor(container: HTMLElement, options: TimeSeriesChartOptions) {
    const color = options.color ?? "#ff6b5b";
    const series: uPlot.Series = {
      label: options.label,
      stroke: color,
      fill: color + "33",
      width: 1.5,
      points: { show: false },
      value: (_u, v) => (v === null || v === undefined ? "–" : `${Math.round(v * 10) / 10} ${options.unit}`),
    };
    if (options.bars) {
      series.paths = uPlot.paths.bars?.({ size: [0.8, 40] });
    }
    const axisStyle = { stroke: "#9aa4b2", grid: { stroke: "#2a3340", width: 1 }, ticks: { stroke: "#2a3340" } };
    this.plot = new uPlot(
      {
        width: Math.max(200, container.clientWidth),
        height: options.height,
        series: [{}, series],
        axes: [axisStyle, { ...axisStyle, size: 50 }],
        scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(1, max * 1.1)] } },
        legend: { show: true, live: true },
        cursor: { drag: { x: false, y: false } },
      },
      [[], []],
      container,
    );
    this.resizeObserver = new ResizeObserver(() => {
      const width = container.clientWidth;
      if (width > 0) {
        this.plot.setSize({ width, height: options.height });
      }
    });
    this.resizeObserver.observe(container);
  }

  /** Times in seconds since the epoch (uPlot's unit), values aligned. */
  setData(times: number[], values: number[]): void {
    this.plot.setData([times, values]);
  }

  destroy(): void {
    this.resizeObserver.disconnect();
    this.plot.destroy();
  }
}
