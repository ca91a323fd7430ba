// The PGlite worker thread when Sluice runs from its TypeScript sources (npm run dev, the tests):
// a worker thread does not inherit the tsx loader its parent registered, so it registers its own
// before loading the worker module. A build starts dist/…/pglite-worker.js directly.
import { register } from 'tsx/esm/api';

register();
await import('./pglite-worker.ts');
