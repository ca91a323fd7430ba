// The web console's build: Preact with esbuild's automatic JSX runtime (no extra plugin), served by
// the gateway under /console/. scripts/build.mjs passes the output directory (DIR/console).
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/console/',
  publicDir: false,
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact' },
  build: {
    target: 'es2022',
    assetsDir: 'assets',
    // No inline script anywhere (the Content-Security-Policy allows none): no preload polyfill.
    modulePreload: { polyfill: false },
    // Small assets stay files too (an inlined data: URL would need a wider CSP).
    assetsInlineLimit: 0,
    sourcemap: false,
    reportCompressedSize: false,
  },
  logLevel: 'warn',
});
