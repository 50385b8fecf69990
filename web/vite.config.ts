import { defineConfig } from 'vite';

declare const process: { env: Record<string, string | undefined> };

// The kiln server the dev server forwards API calls to.
const target = process.env.KILN_URL || 'http://127.0.0.1:8420';

export default defineConfig({
  base: '/',
  oxc: {
    jsx: { runtime: 'automatic', importSource: 'preact' },
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    chunkSizeWarningLimit: 1200,
  },
  server: {
    port: 5173,
    proxy: {
      '/api': { target, changeOrigin: false },
      '/dav': { target, changeOrigin: false },
      '^/jobs/[^/]+/tensorboard': { target, changeOrigin: false, ws: true },
    },
  },
});
