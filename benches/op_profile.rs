//! Where tract spends a model run: time per optimised op kind, for the three embedded models.
//!
//! `cargo bench --bench op_profile` (under a minute). Loads each NNEF the build embeds (read
//! from `OUT_DIR`, the same bytes the binary includes), optimises it as `Model::embedded` does,
//! warms up once, then times every node of RUNS runs through tract's `run_plan_with_eval` hook
//! and prints, per model, the total per op name (`Conv`, `DepthWise`, `OptMatMul`, …) with its
//! share. Per-node timing adds a little overhead; read the shares, not the absolute sum.
//!
//! With `--plain N` (run the executable from `target/release/deps/op_profile-*` directly) it
//! instead prints one JSON line per model with the median of N plain runs (no per-node hook);
//! `benches/analyze_vs_onnxruntime.py` uses that to time tract beside onnxruntime per model.

use std::collections::BTreeMap;
use std::time::Instant;

use tract_core::internal::*;
use tract_core::plan::{eval, SimpleState};

const RUNS: usize = 7;

/// What is profiled: label, embedded model, detector size `[height, width]` to pin.
const CASES: [(&str, &str, Option<[usize; 2]>); 5] = [
    ("centerface@640x480", "centerface", Some([480, 640])),
    ("centerface@480x640", "centerface", Some([640, 480])),
    ("centerface@256x256", "centerface", Some([256, 256])),
    ("mobilefacenet", "mobilefacenet", None),
    ("faceres", "faceres", None),
];

/// A short label for a node's op: the op name, with depthwise convolutions told apart.
fn op_label(node: &TypedNode) -> String {
    let name = node.op().name().to_string();
    let info = node.op().info().unwrap_or_default().join(" ");
    if name.contains("Conv") && info.contains("group") && !info.contains("group: 1,") {
        format!("{name} (grouped)")
    } else {
        name
    }
}

fn main() -> TractResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let plain: Option<usize> =
        args.iter().position(|a| a == "--plain").and_then(|i| args.get(i + 1)).and_then(|n| n.parse().ok());
    let nnef = tract_nnef::nnef();
    for (label, name, hw) in CASES {
        let mut model = nnef.model_for_read(&mut &facegate::model::embedded_nnef(name)?[..])?;
        if let Some(hw) = hw {
            model = facegate::model::pin_input_size(model, hw)?;
        }
        let model = match std::env::var("FACEGATE_NHWC").as_deref() {
            Ok("before") => {
                let t = tract_core::transform::get_transform("conv_nhwc")?.context("conv_nhwc")?;
                t.transform(&mut model)?;
                model.into_optimized()?
            }
            Ok("after") => {
                model.declutter()?;
                let t = tract_core::transform::get_transform("conv_nhwc")?.context("conv_nhwc")?;
                t.transform(&mut model)?;
                model.optimize()?;
                model
            }
            Ok("tract") => model.into_optimized()?,
            Ok("debug") => {
                model.declutter()?;
                for node in model.nodes() {
                    if let Some(c) = node.op_as::<tract_core::ops::cnn::conv::Conv>() {
                        if c.group > 1 {
                            let f: Vec<String> = node.inputs.iter().map(|i| format!("{:?} konst={}", model.outlet_fact(*i).unwrap().shape, model.outlet_fact(*i).unwrap().konst.is_some())).collect();
                            println!("{} {:?} {:?}", node.name, c, f);
                        }
                    }
                }
                facegate::model::optimize(model)?
            }
            _ => facegate::model::optimize(model)?,
        };
        let shape: Vec<usize> = model
            .input_fact(0)?
            .shape
            .iter()
            .map(|d| d.to_usize().map_err(|e| anyhow!("{e:?}")))
            .collect::<TractResult<_>>()?;
        if std::env::var("FACEGATE_DUMP").is_ok() {
            for node in model.nodes() {
                let n = node.op().name();
                if n.contains("MatMul") || n.contains("Depth") {
                    println!("{} {} {:?} -> {:?}", node.name, n, node.op().info().unwrap_or_default(), model.outlet_fact(node.id.into())?.shape);
                }
            }
        }
        let plan = TypedSimplePlan::new(model)?;
        let input = || -> TractResult<TVec<TValue>> {
            Ok(tvec![Tensor::from_shape(&shape, &vec![0.5f32; shape.iter().product()])?.into_tvalue()])
        };
        let mut state = SimpleState::new(&plan)?;
        state.run(input()?)?;
        if let Some(n) = plain {
            let mut times: Vec<f64> = (0..n.max(1))
                .map(|_| {
                    let x = input()?;
                    let t = Instant::now();
                    state.run(x)?;
                    Ok(t.elapsed().as_secs_f64())
                })
                .collect::<TractResult<_>>()?;
            times.sort_by(f64::total_cmp);
            println!(
                "{{\"model\": \"{label}\", \"median_ms\": {:.4}, \"runs\": {}}}",
                1e3 * times[times.len() / 2],
                times.len()
            );
            continue;
        }
        let mut per_op: BTreeMap<String, (usize, f64)> = BTreeMap::new();
        let mut wall = Vec::new();
        for run in 0..RUNS {
            let t = Instant::now();
            state.run_plan_with_eval(input()?, |ctx, st, node, inputs| {
                let t = Instant::now();
                let out = eval(ctx, st, node, inputs);
                if std::env::var("FACEGATE_NODES").is_ok() && run == RUNS - 1 {
                    eprintln!("node {:>8.3} ms {} {}", 1e3 * t.elapsed().as_secs_f64(), node.name, op_label(node));
                }
                let e = per_op.entry(op_label(node)).or_insert((0, 0.0));
                if run == 0 {
                    e.0 += 1;
                }
                e.1 += t.elapsed().as_secs_f64();
                out
            })?;
            wall.push(t.elapsed().as_secs_f64());
        }
        wall.sort_by(f64::total_cmp);
        let total: f64 = per_op.values().map(|v| v.1).sum();
        println!(
            "\n### {label} {:?}: median run {:.1} ms over {RUNS} runs (per-node timing on)\n",
            shape,
            1e3 * wall[RUNS / 2]
        );
        println!("| op | nodes | ms per run | share |\n|---|---|---|---|");
        let mut rows: Vec<_> = per_op.into_iter().collect();
        rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
        for (op, (n, secs)) in rows.iter().filter(|r| r.1 .1 / total > 0.005) {
            println!("| {op} | {n} | {:.2} | {:.1}% |", 1e3 * secs / RUNS as f64, 100.0 * secs / total);
        }
    }
    Ok(())
}
