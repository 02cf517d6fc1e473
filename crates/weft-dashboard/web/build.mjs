// Bundles the dashboard into ../assets/: index.html, app.js, app.css, nothing else.
// The output is deterministic (same sources and lock file, same bytes): the Rust side
// embeds these files with include_bytes!.
import * as esbuild from 'esbuild';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, '..', 'assets');
mkdirSync(out, { recursive: true });

// The bundled packages' licences, kept at the top of app.js.
const bundled = ['preact', '@dagrejs/dagre', '@dagrejs/graphlib'];
const notices = bundled.map((p) => {
  const dir = join(here, 'node_modules', p);
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  let text = '';
  for (const f of ['LICENSE', 'LICENSE.md', 'LICENSE.txt', 'license']) {
    try {
      text = readFileSync(join(dir, f), 'utf8').trim();
      break;
    } catch {}
  }
  return `${pkg.name} ${pkg.version} (${pkg.license})\n${text}`.replaceAll('*/', '* /');
});
const banner = `/*! Weft dashboard. Bundles:\n\n${notices.join('\n\n')}\n*/`;

const common = { bundle: true, minify: true, sourcemap: false, charset: 'utf8', logLevel: 'warning', write: false, legalComments: 'none' };

const js = await esbuild.build({
  ...common,
  entryPoints: [join(here, 'src', 'main.tsx')],
  outfile: join(out, 'app.js'),
  format: 'iife',
  target: 'es2020',
  jsx: 'automatic',
  jsxImportSource: 'preact',
  define: { 'process.env.NODE_ENV': '"production"' },
  banner: { js: banner },
});
const css = await esbuild.build({
  ...common,
  entryPoints: [join(here, 'src', 'app.css')],
  outfile: join(out, 'app.css'),
  target: ['chrome100', 'firefox100', 'safari15'],
});

const html = readFileSync(join(here, 'src', 'index.html'), 'utf8').replace(/\n\s*/g, '');
const files = [
  ['app.js', js.outputFiles[0].contents],
  ['app.css', css.outputFiles[0].contents],
  ['index.html', new TextEncoder().encode(html + '\n')],
];
for (const [name, bytes] of files) {
  writeFileSync(join(out, name), bytes);
  console.log(`${name.padEnd(10)} ${(bytes.length / 1024).toFixed(1).padStart(7)} KiB`);
}
