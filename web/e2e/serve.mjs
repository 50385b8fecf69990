// A tiny static server for web/dist with the single-page fallback, which
// forwards /api, /dav and /jobs/*/tensorboard to kiln: what `kiln server`
// itself does once it embeds the UI (KILN_UI_FROM_SERVER=1 uses that instead).
import { createServer, request } from 'node:http';
import { createReadStream, statSync } from 'node:fs';
import { extname, join, normalize, sep } from 'node:path';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.json': 'application/json',
  '.woff2': 'font/woff2',
  '.ico': 'image/x-icon',
};

export const isBackend = (path) => path.startsWith('/api/') || path === '/api' || path.startsWith('/dav') || /^\/jobs\/[^/]+\/tensorboard(\/|$)/.test(path);

export function serve(dist, backend) {
  const target = new URL(backend);
  const server = createServer((req, res) => {
    let path;
    try {
      path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    } catch {
      res.writeHead(400, { 'content-type': 'text/plain' }).end('bad path');
      return;
    }
    if (isBackend(path)) return proxy(req, res, target);
    let file = normalize(join(dist, path));
    if (!file.startsWith(dist + sep) && file !== dist) {
      res.writeHead(400).end();
      return;
    }
    let st;
    try {
      st = statSync(file);
      if (st.isDirectory()) throw new Error('dir');
    } catch {
      // As kiln does: only missing assets and top-level files are 404s;
      // deeper paths are the app's routes, whose ids may hold dots.
      const name = path.replace(/^\//, '');
      if (name.startsWith('assets/') || (!name.includes('/') && name.includes('.'))) {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
        return;
      }
      file = join(dist, 'index.html');
      st = statSync(file);
    }
    res.writeHead(200, {
      'content-type': TYPES[extname(file)] || 'application/octet-stream',
      'content-length': st.size,
      'cache-control': file.includes(`${sep}assets${sep}`) ? 'public, max-age=31536000, immutable' : 'no-cache',
    });
    if (req.method === 'HEAD') return res.end();
    createReadStream(file).pipe(res);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

function proxy(req, res, target) {
  const up = request(
    { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: { ...req.headers, host: target.host } },
    (r) => {
      res.writeHead(r.statusCode || 502, r.headers);
      r.pipe(res);
    },
  );
  up.on('error', (e) => {
    if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
    res.end(`proxy: ${e.message}`);
  });
  res.on('close', () => up.destroy());
  req.pipe(up);
}
