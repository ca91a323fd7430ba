// A TCP proxy in front of a real service that a test can cut and restore: an outage of the path to
// Redis (or any server) without stopping the shared server other tests use. Cut: every connection
// is destroyed and new ones are refused (the port is closed); restore: it listens again on the same port.
import net from 'node:net';

export interface TcpCut {
  /** 127.0.0.1:port of the proxy. */
  readonly port: number;
  cut(): Promise<void>;
  restore(): Promise<void>;
  close(): Promise<void>;
}

export async function tcpCut(target: { host: string; port: number }): Promise<TcpCut> {
  const sockets = new Set<net.Socket>();
  const track = (s: net.Socket) => { sockets.add(s); s.once('close', () => sockets.delete(s)); };
  const server = net.createServer((client) => {
    const upstream = net.connect(target);
    track(client); track(upstream);
    client.pipe(upstream).pipe(client);
    const end = () => { client.destroy(); upstream.destroy(); };
    client.once('error', end); upstream.once('error', end);
    client.once('close', end); upstream.once('close', end);
  });
  const listen = (port: number) => new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => { server.off('error', reject); resolve(); });
  });
  await listen(0);
  const port = (server.address() as net.AddressInfo).port;
  const stop = () => new Promise<void>((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
    for (const s of sockets) s.destroy();
  });
  return { port, cut: stop, restore: () => listen(port), close: stop };
}
