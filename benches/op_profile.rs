//! Where tract spends a model run: time per optimised op kind, for the three embedded models.
//!
//! `cargo bench --bench op_profile` (under a minute). Loads each NNEF the build embeds (read
//! from `OUT_DIR`, the same bytes the binary includes), optimises it as `Model::embedded` does
//! (`model::optimize`: tract's passes with facegate's kernels substituted),
//! warms up once, then times every node of RUNS runs through tract's `run_plan_with_eval` hook
//! and prints, per model, the total per op name (`Conv`, `DepthWise`, `OptMatMul`, …) with its
//! share. Per-node timing adds a little overhead; read the shares, not the absolute sum.
//!
//! Environment: `FACEGATE_PLAN=tract` profiles tract's own plan (`into_optimized`) instead of
//! the one the binary runs (`model::optimize`, with facegate's kernels); `FACEGATE_NODES=1`
//! also prints each node's median time over the runs on stderr; `FACEGATE_PLAN_DUMP=1` prints the
//! optimised plan's nodes; `FACEGATE_ONLY=LABEL` profiles only the cases whose
//! label starts with LABEL.
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
const CASES: [(&str, &str, Option<[usize; 2]>); 7] = [
    ("centerface@640x480", "centerface", Some([480, 640])),
    ("centerface@480x640", "centerface", Some([640, 480])),
    ("centerface@256x256", "centerface", Some([256, 256])),
    ("mobilefacenet", "mobilefacenet", None),
    ("faceres", "faceres", None),
    ("minifasnet-v2", "minifasnet-v2", None),
    ("minifasnet-v1se", "minifasnet-v1se", None),
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
    // As the binary does first thing: freed tensors' memory stays in the process.
    facegate::model::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let plain: Option<usize> =
        args.iter().position(|a| a == "--plain").and_then(|i| args.get(i + 1)).and_then(|n| n.parse().ok());
    let per_node = std::env::var("FACEGATE_NODES").is_ok();
    let nnef = tract_nnef::nnef();
    let only = std::env::var("FACEGATE_ONLY").ok();
    for (label, name, hw) in CASES {
        if only.as_deref().is_some_and(|o| !label.starts_with(o)) {
            continue;
        }
        let mut model = nnef.model_for_read(&mut &facegate::model::embedded_nnef(name)?[..])?;
        if let Some(hw) = hw {
            model = facegate::model::pin_input_size(model, hw)?;
        }
        // As `Model::from_typed` does (tract's passes with facegate's kernels substituted), or
        // tract's own plan alone with FACEGATE_PLAN=tract.
        let model = if std::env::var("FACEGATE_PLAN").as_deref() == Ok("tract") {
            model.into_optimized()?
        } else {
            facegate::model::optimize(model)?
        };
        let shape: Vec<usize> = model
            .input_fact(0)?
            .shape
            .iter()
            .map(|d| d.to_usize().map_err(|e| anyhow!("{e:?}")))
            .collect::<TractResult<_>>()?;
        if std::env::var("FACEGATE_PLAN_DUMP").is_ok() {
            for node in model.nodes() {
                let (op, info) = (node.op().name(), node.op().info().unwrap_or_default());
                println!("{} {op} {info:?} -> {:?}", node.name, model.outlet_fact(node.id.into())?.shape);
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
        let mut node_times: Vec<Vec<f64>> = vec![Vec::new(); plan.model().nodes().len()];
        let mut wall = Vec::new();
        for run in 0..RUNS {
            let t = Instant::now();
            state.run_plan_with_eval(input()?, |ctx, st, node, inputs| {
                let t = Instant::now();
                let out = eval(ctx, st, node, inputs);
                node_times[node.id].push(t.elapsed().as_secs_f64());
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
        if per_node {
            for node in plan.model().nodes() {
                let times = &mut node_times[node.id];
                if times.is_empty() {
                    continue; // not run by the plan (a constant folded into its consumer)
                }
                times.sort_by(f64::total_cmp);
                let shape = &plan.model().outlet_fact(node.id.into())?.shape;
                eprintln!("node {:>8.3} ms {} {} {shape:?}", 1e3 * times[times.len() / 2], node.name, op_label(node));
            }
        }
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
