import { createStore } from '../src/adapters/store/factory.ts';
const t = Date.now();
try { const s = await createStore(process.argv[2]!, { connectTimeoutMs: 3000 }); await s.close(); console.log('ok'); }
catch (e) { console.log(String(e), JSON.stringify((e as any).details)); }
console.log(Date.now() - t, 'ms');
