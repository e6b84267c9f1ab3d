// Optional cross-check of testdata/models/*.ref.json with onnxruntime (Node binding).
// The Go tests do the same through onnxruntime_go; this needs no Go build:
//   d=$(mktemp -d) && (cd $d && npm install --ignore-scripts onnxruntime-node@1.24.1)
//   NODE_PATH=$d/node_modules node testdata/gen/verify_ort.js testdata/models
// (--ignore-scripts skips the install script that fetches CUDA libraries; the CPU
// library ships in the package.) Exits non-zero if any output differs by more than atol.
const ort = require('onnxruntime-node');
const fs = require('fs');
const path = require('path');

async function main() {
  const dir = process.argv[2] || 'testdata/models';
  let bad = 0;
  for (const f of fs.readdirSync(dir).filter(f => f.endsWith('.ref.json')).sort()) {
    const ref = JSON.parse(fs.readFileSync(path.join(dir, f)));
    for (const level of ['disabled', 'all']) {  // plain kernels and ORT's fused graph
      const sess = await ort.InferenceSession.create(path.join(dir, ref.model), {graphOptimizationLevel: level});
      for (const c of ref.cases) {
        const feeds = {};
        for (const [k, t] of Object.entries(c.inputs)) {
          const data = t.dtype === 'int64' ? BigInt64Array.from(t.data.map(BigInt)) : Float32Array.from(t.data);
          feeds[k] = new ort.Tensor(t.dtype, data, t.shape);
        }
        for (const n of sess.inputNames) if (!(n in feeds)) { console.log(`${f} ${c.name}: input ${n} missing`); bad++; }
        const out = await sess.run(feeds);
        let worst = 0;
        for (const [k, t] of Object.entries(c.outputs)) {
          const o = out[k];
          if (JSON.stringify(Array.from(o.dims)) !== JSON.stringify(t.shape)) {
            console.log(`${f} ${c.name}: ${k} shape ${o.dims} want ${t.shape}`); bad++; continue;
          }
          for (let i = 0; i < t.data.length; i++) worst = Math.max(worst, Math.abs(o.data[i] - t.data[i]));
        }
        const ok = worst <= ref.atol;
        if (!ok) bad++;
        console.log(`${ok ? 'ok  ' : 'FAIL'} ${ref.model} opt=${level} ${c.name}: ${Object.keys(c.outputs).length} outputs, max |diff| ${worst.toExponential(2)}`);
      }
    }
  }
  console.log(bad ? `${bad} failed` : 'all outputs within atol');
  process.exit(bad ? 1 : 0);
}
main().catch(e => { console.error(e); process.exit(2); });
