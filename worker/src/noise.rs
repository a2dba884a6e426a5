//! Per-sample noise off the critical path. Drawing a batch's noise (the per-sample generators of
//! the random-number contract, rng.rs) is host work; [`NoiseProducer`] does it on its own thread
//! for the next batch while the device samples the current one, in page-locked (pinned) host
//! memory on a CUDA device so that the upload is an asynchronous copy.
//!
//! The producer thread is the only user of libtorch's global CPU generator in a worker process,
//! so the draws are exactly the ones the contract defines, whatever the batch layout.
use crate::rng::draw_sample;
use fidshard_core::LabelMode;
use std::sync::mpsc;
use std::time::Instant;
use tch::{Device, Tensor};

/// The draws of one batch: labels, and noise `(B, steps + 1, C, H, W)` on the CPU (pinned when
/// the engine's device is a GPU).
pub struct Draws {
    pub indices: Vec<u64>,
    pub labels: Vec<i64>,
    pub noise: Tensor,
    /// Seconds the drawing took (on the producer thread when prefetched).
    pub seconds: f64,
}

/// What one sample's draws depend on.
#[derive(Debug, Clone, Copy)]
pub struct DrawSpec {
    pub seed: u64,
    pub labels: LabelMode,
    pub num_classes: i64,
    pub steps: usize,
    pub latent_shape: [i64; 3],
    pub device: Device,
}

impl DrawSpec {
    /// Draws `indices` on this thread.
    pub fn draw(&self, indices: &[u64]) -> Draws {
        let _guard = tch::no_grad_guard();
        let start = Instant::now();
        let (labels, noises): (Vec<i64>, Vec<Tensor>) = indices
            .iter()
            .map(|&i| {
                let d = draw_sample(
                    self.seed,
                    i,
                    self.labels,
                    self.num_classes,
                    self.steps,
                    self.latent_shape,
                );
                (d.label, d.noise)
            })
            .unzip();
        let mut noise = Tensor::stack(&noises, 0);
        if self.device.is_cuda() {
            noise = noise.pin_memory(self.device);
        }
        Draws {
            indices: indices.to_vec(),
            labels,
            noise,
            seconds: start.elapsed().as_secs_f64(),
        }
    }
}

/// Draws requested batches on a thread of its own, in request order.
pub struct NoiseProducer {
    requests: Option<mpsc::Sender<Vec<u64>>>,
    results: mpsc::Receiver<Draws>,
    in_flight: usize,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl NoiseProducer {
    pub fn new(spec: DrawSpec) -> NoiseProducer {
        let (req_tx, req_rx) = mpsc::channel::<Vec<u64>>();
        let (res_tx, res_rx) = mpsc::channel::<Draws>();
        let handle = std::thread::spawn(move || {
            for indices in req_rx {
                if res_tx.send(spec.draw(&indices)).is_err() {
                    break;
                }
            }
        });
        NoiseProducer {
            requests: Some(req_tx),
            results: res_rx,
            in_flight: 0,
            handle: Some(handle),
        }
    }

    /// Asks for the draws of `indices` (answered in request order by [`NoiseProducer::take`]).
    pub fn request(&mut self, indices: Vec<u64>) {
        if let Some(tx) = &self.requests {
            if tx.send(indices).is_ok() {
                self.in_flight += 1;
            }
        }
    }

    /// The oldest requested draws; `None` when nothing is in flight.
    pub fn take(&mut self) -> Option<Draws> {
        if self.in_flight == 0 {
            return None;
        }
        self.in_flight -= 1;
        self.results.recv().ok()
    }

    /// Drops every answer still in flight (after the batch layout changed, e.g. an OOM halving).
    pub fn clear(&mut self) {
        while self.take().is_some() {}
    }
}

impl Drop for NoiseProducer {
    fn drop(&mut self) {
        self.requests = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
