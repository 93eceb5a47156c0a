/**
 * Implements: a horizontal band of a canvas that Chart.js can take for a canvas of its own, so several
 * charts share one page: one PNG, or one SVG document (an SVG canvas cannot be drawn onto another
 * without turning it into pixels, and separate SVG documents pasted together would repeat the clip
 * ids every chart defines).
 *
 * Chart.js sets its transform with setTransform and resetTransform (for the pixel ratio and to clear),
 * which would undo a translation made before it: the band's context adds its offset to both. Clearing
 * is ignored, since a chart clears its whole canvas before each draw, and the page's background is
 * painted once by its owner.
 */
import type { SKRSContext2D } from '@napi-rs/canvas';

/** What Chart.js's platform for non-DOM canvases reads of a canvas. */
export interface CanvasBand {
  width: number;
  height: number;
  getContext(kind: '2d'): SKRSContext2D;
}

export function canvasBand(context: SKRSContext2D, top: number, width: number, height: number): CanvasBand {
  const canvas: CanvasBand = { width, height, getContext: () => band };
  const band = new Proxy(context, {
    get(target, property) {
      // Chart.js takes its canvas, and that canvas's size, from the context.
      if (property === 'canvas') return canvas;
      if (property === 'setTransform') {
        return (a: number, b: number, c: number, d: number, e: number, f: number) => target.setTransform(a, b, c, d, e, f + top);
      }
      if (property === 'resetTransform') return () => target.setTransform(1, 0, 0, 1, 0, top);
      if (property === 'clearRect') return () => undefined;
      // The context's accessors and methods are native: they need the context itself as `this`.
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
    set(target, property, value) {
      return Reflect.set(target, property, value, target);
    },
  });
  return canvas;
}
