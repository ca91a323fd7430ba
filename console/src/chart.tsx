// A uPlot chart in a Preact component: created once per data change, resized with its container.
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

export function Chart(props: { options: Omit<uPlot.Options, 'width' | 'height'>; data: uPlot.AlignedData; height?: number; label: string }) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = box.current;
    if (!el) return undefined;
    const width = () => Math.max(240, el.clientWidth);
    const plot = new uPlot({ ...props.options, width: width(), height: props.height ?? 220 }, props.data, el);
    const onResize = () => plot.setSize({ width: width(), height: props.height ?? 220 });
    window.addEventListener('resize', onResize);
    return () => { window.removeEventListener('resize', onResize); plot.destroy(); };
  }, [props.data, props.options, props.height]);
  return <div class="chart" ref={box} role="img" aria-label={props.label} />;
}

export const barPaths = uPlot.paths.bars!({ size: [0.6, 40] });
