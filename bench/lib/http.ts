import http from 'node:http';

/** One keep-alive connection pool for every request of a benchmark, as a real client would use. */
const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });

export interface Answer {
  status: number;
  bytes: number;
  /** Empty when the answer was only counted (`keep: false`). */
  body: Buffer;
}

/**
 * POSTs a JSON body to `http://127.0.0.1:<port><path>` and reads the whole answer; with
 * `keep: false` the bytes are counted and dropped (timed runs measure the server, not a JSON parse).
 */
export function postJson(port: number, urlPath: string, body: unknown, keep = true): Promise<Answer> {
  const payload = Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, path: urlPath, method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': payload.length } },
      (res) => {
        const chunks: Buffer[] = [];
        let bytes = 0;
        res.on('data', (c: Buffer) => {
          bytes += c.length;
          if (keep) chunks.push(c);
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/** Like postJson, but throws unless the answer is a 2xx. */
export async function postOk(port: number, urlPath: string, body: unknown, keep = true): Promise<Answer> {
  const answer = await postJson(port, urlPath, body, keep);
  if (answer.status < 200 || answer.status >= 300) throw new Error(`${urlPath} answered ${answer.status}: ${answer.body.toString().slice(0, 200)}`);
  return answer;
}

export function closeConnections(): void {
  agent.destroy();
}
