// The PGlite worker thread with a way to die, for the tests of pglite-thread.ts: a statement
// `SELECT 'exit'` ends the thread at once (as a fatal WebAssembly error would), and
// `SELECT 'throw'` throws outside any request (an uncaught exception in the thread). The real
// worker is loaded first (the port delivers nothing until it listens), and starts the statement
// asynchronously, so the thread dies before answering it.
import { parentPort } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

register();
await import('../../src/adapters/store/pglite-worker.ts');
parentPort.on('message', (batch) => {
  for (const m of batch) {
    if (m.sql === "SELECT 'exit'") process.exit(7);
    if (m.sql === "SELECT 'throw'") setImmediate(() => { throw new Error('thrown in the store thread'); });
  }
});
