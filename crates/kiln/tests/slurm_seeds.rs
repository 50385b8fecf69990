//! The seed jobs from examples/ through `kiln server --engine slurm` on a real
//! two-node cluster (`scripts/slurm-cluster up DIR`, `SLURM_CONF`), with real
//! PyTorch from KILN_TEST_PYTHON: Crater MNIST, the Kubeflow PyTorchJob (DDP
//! over gloo, master + 2 workers) and the AI Lab job spanning both nodes. The
//! same cases run on the local engine in tests/pytorch_jobs.rs; the OpenPAI
//! job with ports runs in tests/slurm_engine.rs. Skipped without a cluster
//! (unless KILN_REQUIRE_SLURM=1) or without PyTorch.

mod common;
#[macro_use]
mod cases;

mod slurm {
    engine_cases!(Slurm: crater_mnist, kubeflow_ddp, ailab_distributed);
}
