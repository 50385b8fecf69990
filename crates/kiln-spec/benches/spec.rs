//! Cost of the protocol's hot paths: parsing a submission, rendering the
//! environment of every task, and deciding an attempt after a task exit.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use kiln_spec::completion::{decide, TaskState, TaskStatus};
use kiln_spec::env::{example_context, render_env, task_ids};
use kiln_spec::parse;

const EXAMPLES: &[(&str, &str)] = &[
    (
        "kiln-single",
        include_str!("../../../examples/crater/mnist.yaml"),
    ),
    (
        "openpai-v1",
        include_str!("../../../examples/openpai/pytorch-ddp.json"),
    ),
    (
        "openpai-v2",
        include_str!("../../../examples/openpai/mnist-v2.yaml"),
    ),
    (
        "kubeflow",
        include_str!("../../../examples/kubeflow/pytorch-simple.yaml"),
    ),
];

fn distributed(workers: u32) -> String {
    format!(
        "name: big\nroles:\n  - {{name: master, command: python train.py, gpus: 8}}\n  - {{name: worker, replicas: {workers}, command: python train.py, gpus: 8}}\n"
    )
}

fn bench_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    for (name, text) in EXAMPLES {
        g.bench_function(*name, |b| b.iter(|| parse(black_box(text.as_bytes()))));
    }
    g.finish();
}

fn bench_render(c: &mut Criterion) {
    let mut g = c.benchmark_group("render_env");
    for tasks in [2u32, 16, 128] {
        let job = parse(distributed(tasks - 1).as_bytes()).expect("valid").job;
        let ctx = example_context(&job, "alice").expect("context");
        g.bench_with_input(BenchmarkId::from_parameter(tasks), &tasks, |b, _| {
            b.iter(|| render_env(black_box(&job), black_box(&ctx)))
        });
    }
    g.finish();
}

fn bench_decide(c: &mut Criterion) {
    let mut g = c.benchmark_group("decide");
    for tasks in [2u32, 128, 1024] {
        let job = parse(distributed(tasks - 1).as_bytes()).expect("valid").job;
        let statuses: Vec<TaskStatus> = task_ids(&job)
            .into_iter()
            .enumerate()
            .map(|(i, task)| TaskStatus {
                task,
                state: if i % 2 == 0 {
                    TaskState::Succeeded
                } else {
                    TaskState::Running
                },
                exit_code: None,
                signal: None,
                restarts: 0,
            })
            .collect();
        g.bench_with_input(BenchmarkId::from_parameter(tasks), &tasks, |b, _| {
            b.iter(|| decide(black_box(&job), black_box(&statuses), false))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_parse, bench_render, bench_decide);
criterion_main!(benches);
