// Runs ONNX models in ONNX Runtime (onnxruntime-node) for tests/test_onnx.cpp:
//   node run.js NODE_MODULES MODEL INPUTS OUTPUTS [MODEL INPUTS OUTPUTS ...]
// INPUTS and OUTPUTS are text files of tensors, each two lines:
//   NAME TYPE RANK D0 D1 ...      (TYPE: float32, int32 or int64)
//   V0 V1 ...                     (row-major values)
// OUTPUTS gets every output of the model, float32 printed with 9 significant digits.
'use strict';
const fs = require('fs');
const path = require('path');
const [modules, ...jobs] = process.argv.slice(2);
const ort = require(path.join(modules, 'onnxruntime-node'));
const arrays = { float32: Float32Array, int32: Int32Array, int64: BigInt64Array };

async function runOne(model, inputs, outputs) {
  const lines = fs.readFileSync(inputs, 'utf8').split('\n');
  const feeds = {};
  for (let k = 0; k + 1 < lines.length; k += 2) {
    const [name, type, rank, ...dims] = lines[k].trim().split(/\s+/);
    const words = lines[k + 1].trim().split(/\s+/).filter((w) => w.length > 0);
    const values = type === 'int64' ? words.map((w) => BigInt(w)) : words.map(Number);
    feeds[name] = new ort.Tensor(type, arrays[type].from(values), dims.slice(0, Number(rank)).map(Number));
  }
  const session = await ort.InferenceSession.create(model);
  const results = await session.run(feeds);
  let text = '';
  for (const name of session.outputNames) {
    const t = results[name];
    text += `${name} float32 ${t.dims.length} ${t.dims.join(' ')}\n`;
    text += Array.from(t.data, (v) => Number(v).toPrecision(9)).join(' ') + '\n';
  }
  fs.writeFileSync(outputs, text);
}

async function main() {
  for (let k = 0; k + 2 < jobs.length; k += 3) await runOne(jobs[k], jobs[k + 1], jobs[k + 2]);
}

main().catch((e) => {
  console.error(`run.js: ${e.message}`);
  process.exit(1);
});
