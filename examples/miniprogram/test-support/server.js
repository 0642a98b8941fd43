// Start `python -m miniprogram_pay serve --sandbox --port 0` for the tests, and stop it afterwards.
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const REPO = path.resolve(__dirname, '..', '..', '..');
const START_TIMEOUT_MS = 30000;

function pythonPath() {
  if (process.env.PYTHON) return process.env.PYTHON;
  return path.join(REPO, '.venv', 'bin', 'python');
}

async function startServer() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'miniprogram-pay-js-'));
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('MINIPROGRAM_PAY_')));
  env.MINIPROGRAM_PAY_DATABASE_URL = `sqlite+aiosqlite:///${path.join(dir, 'test.db')}`;
  const child = spawn(pythonPath(), ['-m', 'miniprogram_pay', 'serve', '--sandbox', '--port', '0', '--log-level', 'warning'], {
    cwd: dir,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stderr.on('data', (chunk) => {
    output += chunk;
  });
  const urls = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the server did not start:\n${output}`)), START_TIMEOUT_MS);
    child.on('exit', (code) => reject(new Error(`the server exited with ${code}:\n${output}`)));
    child.stdout.on('data', (chunk) => {
      output += chunk;
      const api = /^ {2}api\s+(\S+)/m.exec(output);
      const sandbox = /^ {2}sandbox\s+(\S+)/m.exec(output);
      if (api && sandbox && /^ready/m.test(output)) {
        clearTimeout(timer);
        resolve({ apiBase: api[1], sandboxUrl: sandbox[1] });
      }
    });
  });
  await waitUntilHealthy(urls.apiBase);
  const stop = () =>
    new Promise((resolve) => {
      if (child.exitCode !== null) return resolve();
      child.removeAllListeners('exit');
      child.on('exit', () => {
        fs.rmSync(dir, { recursive: true, force: true });
        resolve();
      });
      child.kill('SIGTERM');
    });
  return { ...urls, adminKey: 'sandbox-admin-key', stop };
}

async function waitUntilHealthy(apiBase) {
  for (let i = 0; i < 100; i += 1) {
    try {
      const res = await fetch(`${apiBase}/health`);
      if (res.ok) return;
    } catch (_) {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${apiBase}/health never answered`);
}

module.exports = { startServer };
