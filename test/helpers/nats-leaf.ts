// A private NATS topology for edge tests and benchmarks: one hub nats-server with JetStream in
// domain `hub` (the origin) and leaf nats-servers without JetStream (the edges), each leaf reaching
// the hub through a TCP proxy the test can cut. Every server has its own ports (client, monitoring,
// leafnode) and config file in a temp dir; stop() kills them all and removes the dir. The shared
// nats on 4222 is never touched.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './process.ts';
import { tcpCut, type TcpCut } from './tcp-cut.ts';

export const NATS_SERVER = process.env.NATS_SERVER_BIN ?? '/usr/sbin/nats-server';
export const HUB_DOMAIN = 'hub';

export interface NatsNode {
  name: string;
  /** nats://127.0.0.1:port for clients. */
  url: string;
  /** http://127.0.0.1:port of the monitoring endpoint. */
  monitor: string;
  /** GET a monitoring endpoint (e.g. '/leafz?subs=1') as JSON. */
  json<T>(path: string): Promise<T>;
  stop(): Promise<void>;
}

export interface Leaf extends NatsNode {
  /** The proxy between this leaf and the hub: cut() severs the leaf connection, restore() lets it reconnect. */
  link: TcpCut;
}

export interface LeafTopology { hub: NatsNode; leafs: Leaf[]; dir: string; stop(): Promise<void> }

/** Whether the nats-server binary is here (the tests skip with a message, or fail under CI, otherwise). */
export function natsServerAvailable(): boolean { return existsSync(NATS_SERVER); }

/** Test options for a suite that starts its own nats-servers: skipped with a message without the binary, failed under CI=true. */
export function natsServerSuite(): { skip?: string } {
  if (natsServerAvailable()) return {};
  const reason = `nats-server is not at ${NATS_SERVER} (NATS_SERVER_BIN)`;
  if (process.env.CI === 'true') throw new Error(`${reason} (CI=true: a missing server fails the run)`);
  console.warn(`SKIP: ${reason}`);
  return { skip: reason };
}

export async function startLeafTopology(leafCount: number, opts: { leafReconnectS?: number } = {}): Promise<LeafTopology> {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-leaf-'));
  const nodes: NatsNode[] = [];
  const links: TcpCut[] = [];
  const stop = async () => {
    await Promise.all(nodes.map((n) => n.stop()));
    await Promise.all(links.map((l) => l.close()));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const [hubPort, hubMon, hubLeafPort] = [await freePort(), await freePort(), await freePort()];
    const hubConf = join(dir, 'hub.conf');
    writeFileSync(hubConf, [
      'server_name: hub',
      `listen: 127.0.0.1:${hubPort}`,
      `http: 127.0.0.1:${hubMon}`,
      `jetstream { domain: ${HUB_DOMAIN}, store_dir: "${join(dir, 'js')}", max_memory_store: 64MB, max_file_store: 256MB }`,
      `leafnodes { listen: 127.0.0.1:${hubLeafPort} }`,
      '',
    ].join('\n'));
    const hub = await startNode('hub', hubConf, hubPort, hubMon);
    nodes.push(hub);
    const leafs: Leaf[] = [];
    for (let i = 0; i < leafCount; i++) {
      const link = await tcpCut({ host: '127.0.0.1', port: hubLeafPort });
      links.push(link);
      const [port, mon] = [await freePort(), await freePort()];
      const name = `leaf${String.fromCharCode(97 + i)}`;
      const conf = join(dir, `${name}.conf`);
      writeFileSync(conf, [
        `server_name: ${name}`,
        `listen: 127.0.0.1:${port}`,
        `http: 127.0.0.1:${mon}`,
        `leafnodes { reconnect: ${opts.leafReconnectS ?? 1}, remotes: [ { url: "nats-leaf://127.0.0.1:${link.port}" } ] }`,
        '',
      ].join('\n'));
      const node = await startNode(name, conf, port, mon);
      nodes.push(node);
      leafs.push({ ...node, link });
    }
    // Each leaf is usable once the hub lists its leaf connection.
    await waitUntil(async () => ((await hub.json<{ leafnodes: number }>('/leafz')).leafnodes ?? 0) === leafCount, 10_000);
    return { hub, leafs, dir, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

async function startNode(name: string, conf: string, port: number, mon: number): Promise<NatsNode> {
  const child: ChildProcess = spawn(NATS_SERVER, ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (c) => { out += c; });
  child.stderr!.on('data', (c) => { out += c; });
  const monitor = `http://127.0.0.1:${mon}`;
  const node: NatsNode = {
    name, url: `nats://127.0.0.1:${port}`, monitor,
    async json<T>(path: string): Promise<T> {
      const res = await fetch(monitor + path);
      if (!res.ok) throw new Error(`${name} ${path}: ${res.status}`);
      return (await res.json()) as T;
    },
    stop: () => new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill('SIGKILL');
    }),
  };
  try {
    await waitUntil(async () => {
      if (child.exitCode !== null) throw new Error(`nats-server ${name} exited:\n${out}`);
      return (await portAnswers(port)) && (await fetch(`${monitor}/healthz`).then((r) => r.ok, () => false));
    }, 10_000);
  } catch (e) {
    await node.stop();
    throw e;
  }
  return node;
}

function portAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

export async function waitUntil(check: () => Promise<boolean>, timeoutMs: number, everyMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Writes a file in the topology's dir (e.g. a config for `nats-server -t`). */
export function writeIn(dir: string, name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}
