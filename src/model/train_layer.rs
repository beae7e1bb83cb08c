//! A decoder layer's training pass as one autograd node, on the CPU in f32: the forward
//! pass keeps what its backward needs, and the backward is written out by hand, every
//! product on [`super::sgemm::gemm`].
//!
//! Composed of candle's ops, a layer is about thirty nodes of the autograd graph, and
//! candle's backward gives every input of every node a zeroed gradient buffer that it then
//! adds into (a memset, an allocation and an element-wise add per edge), and repacks both
//! operands of every product: on the mid-size fine-tuning benchmark of BENCHMARKS.md
//! (session 28) those were a quarter of a step. Here a layer is one node.
//!
//! The gradients of trainable weights reach candle's gradient store through one small node
//! per weight ([`Inject`]) between the layer's input and the layer: its forward is the
//! identity on the input; its backward passes the input's gradient through and hands over
//! the weight's gradient, which the layer's backward (run first: the layer is downstream)
//! has left in a shared cell. Callers see the usual contract: `grads.get(weight)`. The
//! trainer instead installs a [`GradSink`] around its backward passes: the layer's backward
//! then adds each weight's gradient in place to its running sum over the micro-batches,
//! and the weights get nothing through candle's store.
//!
//! The trainer itself keeps its decoder layers out of candle's graph: [`forward_pending`]
//! runs a layer's forward pass and keeps it ([`Pending`]), and [`Pending::input_gradient`]
//! runs its backward from the output's gradient, the weights' gradients into the sink.
//!
//! Used by [`super::decoder::DecoderLayer`] when [`applies`] (training, f32, CPU, SiLU MLP,
//! no KV cache, no left-padded batch). Checked against PyTorch's gradients by
//! tests/wide_head.rs (frozen weights as panels, packed and separate conversations, two
//! workers, checkpointing) and by every other fine-tuning test, which run through it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, DType, Layout, Result, Shape, Tensor, TensorId};
use rayon::prelude::*;

use super::decoder::{DecoderLayer, RopeTables};
use super::ops::{rms_rows, rms_rows_backward, Grad, ScaledMaskedSoftmax};
use super::sgemm::{gemm, gemm_by_panels_new, gemm_new, View};

/// The layer's tensors, by slot.
const WQ: usize = 0;
const WK: usize = 1;
const WV: usize = 2;
const WO: usize = 3;
const WG: usize = 4;
const WU: usize = 5;
const WD: usize = 6;
const N_IN: usize = 7;
const N_POST: usize = 8;
const N_Q: usize = 9;
const N_K: usize = 10;
/// Biases: slot `BIAS + i` for weight slot i (q, k, v, o, gate, up, down).
const BIAS: usize = 11;
const SLOTS: usize = 18;

/// Trainable tensors' gradients, summed in place over the backward passes that run while
/// the sink is installed ([`sinking`]), by tensor.
///
/// Handed over through candle's gradient store, a weight's gradient costs four buffers of
/// its size per micro-batch: the product's output, the store's zeros, their sum, and the
/// trainer's running sum. For a 2B-shaped layer's MLP weights (50 MB each) those were
/// nearly all of a fine-tuning step's page faults (BENCHMARKS.md, session 30). With a sink
/// installed, the layer's backward adds each gradient product straight into the tensor's
/// running sum, and the weights get no gradient in candle's store.
#[derive(Default)]
pub(crate) struct GradSink(HashMap<TensorId, Vec<f32>>);

impl GradSink {
    /// The gradient summed for `t` so far, taken out of the sink.
    pub(crate) fn take(&mut self, t: &Tensor) -> Option<Vec<f32>> {
        self.0.remove(&t.id())
    }
}

thread_local! {
    /// The sink of the backward passes that run on this thread, if one is installed.
    static SINK: RefCell<Option<GradSink>> = const { RefCell::new(None) };
}

/// `f()` with `sink` installed on this thread: the backward pass of every layer node that
/// runs on it (candle runs a backward pass on the thread that calls it) adds its
/// trainable tensors' gradients to `sink` instead of handing them to candle's store.
pub(crate) fn sinking<R>(sink: &mut GradSink, f: impl FnOnce() -> R) -> R {
    let outer = SINK.with(|s| s.replace(Some(std::mem::take(sink))));
    let out = f();
    *sink = SINK.with(|s| s.replace(outer)).unwrap_or_default();
    out
}

/// Whether [`forward`] runs this layer's pass: training (`grad`), f32 on the CPU, SiLU,
/// every tensor f32 on the CPU, no cache, no left-padded batch.
pub(crate) fn applies(
    layer: &DecoderLayer,
    x: &Tensor,
    rope: &RopeTables,
    grad: Grad,
    cached: bool,
) -> bool {
    grad == Grad::Track
        && !cached
        && rope.batch_pad.is_empty()
        && x.device().is_cpu()
        && x.dtype() == DType::F32
        && x.rank() == 3
        && layer.mlp.act == candle_nn::Activation::Silu
        && slots(layer)
            .iter()
            .flatten()
            .all(|t| t.dtype() == DType::F32 && t.device().is_cpu())
        && slots(layer)[..WD + 1]
            .iter()
            .flatten()
            .all(|t| layout_of(t).is_some())
}

/// How a linear weight is stored, if the layer's pass reads it: torch's rows, its
/// transpose (a frozen weight laid out for the forward product, see
/// `Model::lay_out_for_forward`), or [`super::sgemm`]'s panels.
fn layout_of(t: &Tensor) -> Option<Stored> {
    if is_panels(t) && !t.track_op() {
        Some(Stored::Panels)
    } else if t.rank() <= 2 && t.is_contiguous() {
        Some(Stored::Rows)
    } else if t.rank() == 2 && t.stride() == [1, t.dim(0).ok()?] {
        Some(Stored::Cols)
    } else {
        None
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Stored {
    Rows,
    Cols,
    Panels,
}

/// Whether `t` is a weight stored as [`super::sgemm`]'s panels (a frozen weight of a model
/// loaded with its frozen layers laid out for the forward product).
fn is_panels(t: &Tensor) -> bool {
    use super::sgemm::PANEL;
    t.rank() == 3 && t.dim(1).ok() == Some(PANEL) && {
        let k = t.dim(2).unwrap_or(0);
        t.stride() == [PANEL * k, 1, PANEL]
    }
}

fn slots(layer: &DecoderLayer) -> [Option<&Tensor>; SLOTS] {
    let (a, m) = (&layer.self_attn, &layer.mlp);
    let lin = [
        &a.q_proj,
        &a.k_proj,
        &a.v_proj,
        &a.o_proj,
        &m.gate_proj,
        &m.up_proj,
        &m.down_proj,
    ];
    let mut out: [Option<&Tensor>; SLOTS] = [None; SLOTS];
    for (i, l) in lin.iter().enumerate() {
        out[i] = Some(&l.weight);
        out[BIAS + i] = l.bias.as_ref();
    }
    out[N_IN] = Some(&layer.input_layernorm.weight);
    out[N_POST] = Some(&layer.post_attention_layernorm.weight);
    out[N_Q] = a.q_norm.as_ref().map(|n| &n.weight);
    out[N_K] = a.k_norm.as_ref().map(|n| &n.weight);
    out
}

/// The layer on `x` (batch, seq, hidden) as one node of the autograd graph (see the
/// module's doc). Call only where [`applies`].
pub(crate) fn forward(
    layer: &DecoderLayer,
    x: &Tensor,
    rope: &RopeTables,
    causal: bool,
) -> Result<Tensor> {
    let node = node(layer, x, rope, causal, x.track_op())?;
    let mut input = x.contiguous()?;
    for (slot, t) in node.weights.iter().enumerate() {
        if let (true, Some(t)) = (node.trainable[slot], t) {
            input = input.apply_op2(
                t,
                Inject {
                    cell: node.cell.clone(),
                    slot,
                },
            )?;
        }
    }
    input.apply_op1(node)
}

/// A layer's forward pass on the CPU in f32 kept for its backward pass, outside candle's
/// autograd graph: [`Pending::input_gradient`] adds the layer's trainable tensors'
/// gradients to the [`GradSink`] installed on the calling thread. The trainer runs its
/// decoder layers this way: no graph nodes, no zeroed gradient buffers, no copies of the
/// input for the weights' nodes.
pub(crate) struct Pending(Layer);

/// The layer on `x` (batch, seq, hidden), kept for its backward pass ([`Pending`]), with
/// its output unless `output` is false: gradient checkpointing's recomputed layer needs
/// none, and its last product, the MLP's down projection, feeds nothing the backward needs
/// (a quarter of a 2B-shaped layer's forward products). The backward computes the input's
/// gradient only with `need_dx`. `Ok(None)` (nothing done) unless [`applies`] holds.
pub(crate) fn forward_pending(
    layer: &DecoderLayer,
    x: &Tensor,
    rope: &RopeTables,
    causal: bool,
    need_dx: bool,
    output: bool,
) -> Result<Option<(Option<Tensor>, Pending)>> {
    if !applies(layer, x, rope, Grad::Track, false) {
        return Ok(None);
    }
    let node = node(layer, x, rope, causal, need_dx)?;
    let x = x.contiguous()?;
    let (y, saved) = {
        let (storage, layout) = x.storage_and_layout();
        let candle_core::Storage::Cpu(storage) = &*storage else {
            candle_core::bail!("train-layer: input not on the CPU");
        };
        let rows = cpu_rows(storage, layout)?;
        with_weights(&node.weights, |w| Ok(node.forward_pass(w, rows, output)))?
    };
    *node.saved.lock().expect("train-layer: saved state") = Some(saved);
    let y = match output {
        true => Some(Tensor::from_vec(y, x.shape(), x.device())?),
        false => None,
    };
    Ok(Some((y, Pending(node))))
}

impl Pending {
    /// The gradient of `Σ layer(x) ⊙ g` with respect to the layer's input `x` (`None`
    /// unless built with `need_dx`), its trainable tensors' gradients added to the sink
    /// installed on this thread (an error if there is none). Runs on a thread of rayon's
    /// pool, as the forward passes do ([`crate::workers::on_pool`]), the sink moved there.
    pub(crate) fn input_gradient(self, g: &Tensor) -> Result<Option<Tensor>> {
        let node = self.0;
        let Some(saved) = node.saved.lock().expect("train-layer: saved state").take() else {
            candle_core::bail!("train-layer: a second backward pass through one forward pass");
        };
        if g.elem_count() != node.dims.t * node.dims.h {
            candle_core::bail!("train-layer: an output gradient of shape {:?}", g.dims());
        }
        let Some(sink) = SINK.with(|s| s.borrow_mut().take()) else {
            candle_core::bail!("train-layer: no gradient sink installed");
        };
        let (dx, sink) = crate::workers::on_pool(|| {
            let outer = SINK.with(|s| s.replace(Some(sink)));
            let dx = g
                .contiguous()
                .and_then(|g| g.flatten_all()?.to_vec1::<f32>())
                .and_then(|dy| {
                    with_weights(&node.weights, |w| {
                        Ok(node.backward_sinking(w, &saved, &dy)?.0)
                    })
                });
            (dx, SINK.with(|s| s.replace(outer)))
        });
        SINK.with(|s| *s.borrow_mut() = sink);
        match dx? {
            Some(dx) => Ok(Some(Tensor::from_vec(dx, g.shape(), g.device())?)),
            None => Ok(None),
        }
    }
}

/// The layer's node for `x`, not yet applied. Call only where [`applies`].
fn node(
    layer: &DecoderLayer,
    x: &Tensor,
    rope: &RopeTables,
    causal: bool,
    need_dx: bool,
) -> Result<Layer> {
    let (b, seq, h) = x.dims3()?;
    let a = &layer.self_attn;
    let hd = a.head_dim;
    let eps = |n: Option<&super::layers::RmsNorm>| n.map_or(0.0, |n| n.eps as f32);
    let dims = Dims {
        t: b * seq,
        seq,
        h,
        nh: a.num_heads,
        nkv: a.num_kv_heads,
        hd,
        inter: {
            let w = &layer.mlp.gate_proj.weight;
            w.elem_count() / w.dim(w.rank() - 1)?
        },
        eps: [
            layer.input_layernorm.eps as f32,
            layer.post_attention_layernorm.eps as f32,
            eps(a.q_norm.as_ref()),
            eps(a.k_norm.as_ref()),
        ],
    };
    if rope.cos.dims() != [seq, hd] || rope.sin.dims() != [seq, hd] || !hd.is_multiple_of(2) {
        candle_core::bail!(
            "train-layer: rotary tables {:?} for a sequence of {seq}, head dimension {hd}",
            rope.cos.dims()
        );
    }
    let table = |t: &Tensor| -> Result<Vec<f32>> {
        t.narrow(1, 0, hd / 2)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()
    };
    // Attention stays within each segment: the packed conversations, or the batch entries.
    let segments: Vec<(usize, usize)> = if rope.segments.len() > 1 {
        if b != 1 || rope.segments.iter().sum::<usize>() != seq {
            candle_core::bail!("train-layer: segments {:?} for ({b}, {seq})", rope.segments);
        }
        let mut start = 0;
        rope.segments
            .iter()
            .map(|&len| {
                start += len;
                (start - len, len)
            })
            .collect()
    } else {
        (0..b).map(|i| (i * seq, seq)).collect()
    };
    let tensors = slots(layer);
    Ok(Layer {
        dims,
        weights: tensors.map(|t| t.cloned()),
        trainable: tensors.map(|t| t.is_some_and(|t| t.track_op())),
        need_dx,
        causal,
        segments,
        cos: table(&rope.cos)?,
        sin: table(&rope.sin)?,
        saved: Mutex::new(None),
        cell: Arc::new(Mutex::new(Handover::default())),
    })
}

#[derive(Clone, Copy)]
struct Dims {
    /// Tokens (batch · seq), rows of the rotary tables, hidden size.
    t: usize,
    seq: usize,
    h: usize,
    /// Query heads, key/value heads, head dimension, MLP width.
    nh: usize,
    nkv: usize,
    hd: usize,
    inter: usize,
    /// eps of the input, post-attention, q and k norms.
    eps: [f32; 4],
}

/// One node: the whole layer.
struct Layer {
    dims: Dims,
    weights: [Option<Tensor>; SLOTS],
    trainable: [bool; SLOTS],
    /// Whether the layer's input needs its gradient (false for the first trained layer
    /// above a frozen prefix: its backward then skips the input's products).
    need_dx: bool,
    causal: bool,
    /// (first token, length) of each attention segment.
    segments: Vec<(usize, usize)>,
    /// The rotary tables' first halves, (seq, hd/2).
    cos: Vec<f32>,
    sin: Vec<f32>,
    saved: Mutex<Option<Saved>>,
    cell: Arc<Mutex<Handover>>,
}

/// The trainable tensors' gradients by slot, from the layer's backward to the [`Inject`]
/// nodes; `sunk` when they went to a [`GradSink`] instead.
#[derive(Default)]
struct Handover {
    grads: Vec<Option<Vec<f32>>>,
    sunk: bool,
}

/// What the backward pass needs from the forward pass (all row-major, token-major).
struct Saved {
    x: Vec<f32>,
    /// 1/rms of each row of x, of x2, of each head of q and of k.
    r1: Vec<f32>,
    r2: Vec<f32>,
    rq: Vec<f32>,
    rk: Vec<f32>,
    h1: Vec<f32>,
    /// q and k before their norms (kept only with the norms), after the rotation, and v.
    q: Vec<f32>,
    k: Vec<f32>,
    qr: Vec<f32>,
    kr: Vec<f32>,
    v: Vec<f32>,
    /// Attention probabilities per (segment, key/value head): `rep` (len, len) blocks.
    probs: Vec<Vec<f32>>,
    o: Vec<f32>,
    x2: Vec<f32>,
    h2: Vec<f32>,
    g: Vec<f32>,
    u: Vec<f32>,
}

/// A linear weight (n, k) as stored: torch's rows, its transpose (k, n) row-major, or
/// [`super::sgemm`]'s panels.
#[derive(Clone, Copy)]
enum Wt<'a> {
    Rows(&'a [f32]),
    Cols(&'a [f32]),
    Panels(&'a [f32]),
}

/// The layer's f32 tensors, read in place for one pass.
struct Weights<'a> {
    s: [Option<Wt<'a>>; SLOTS],
}

impl<'a> Weights<'a> {
    fn get(&self, slot: usize) -> Wt<'a> {
        self.s[slot].expect("train-layer: a weight that the layer has")
    }

    /// A norm's weight or a bias (always rows).
    fn vec(&self, slot: usize) -> Option<&'a [f32]> {
        match self.s[slot] {
            Some(Wt::Rows(v)) => Some(v),
            _ => None,
        }
    }
}

/// `f` with the f32 contents of `tensors` (contiguous CPU tensors, or panels).
fn with_weights<R>(
    tensors: &[Option<Tensor>; SLOTS],
    f: impl FnOnce(&Weights) -> Result<R>,
) -> Result<R> {
    let guards: Vec<_> = tensors
        .iter()
        .map(|t| t.as_ref().map(|t| (t.storage_and_layout(), layout_of(t))))
        .collect();
    let mut s: [Option<Wt>; SLOTS] = [None; SLOTS];
    for (slot, g) in guards.iter().enumerate() {
        if let Some(((storage, layout), stored)) = g {
            let candle_core::Storage::Cpu(CpuStorage::F32(data)) = &**storage else {
                candle_core::bail!("train-layer: a weight that is not f32 on the CPU");
            };
            let start = layout.start_offset();
            let data = &data[start..start + layout.shape().elem_count()];
            s[slot] = Some(match stored {
                Some(Stored::Rows) => Wt::Rows(data),
                Some(Stored::Cols) => Wt::Cols(data),
                Some(Stored::Panels) => Wt::Panels(data),
                None => candle_core::bail!(
                    "train-layer: a weight of shape {:?}, strides {:?}",
                    layout.dims(),
                    layout.stride()
                ),
            });
        }
    }
    f(&Weights { s })
}

/// The rows of a contiguous f32 CPU tensor.
fn cpu_rows<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("train-layer: f32 only");
    };
    let Some((a, b)) = layout.contiguous_offsets() else {
        candle_core::bail!("train-layer: input must be contiguous");
    };
    Ok(&data[a..b])
}

/// `x · wᵀ (+ b)` for a linear weight `w` (n, k): (rows, n).
fn linear(x: &[f32], k: usize, w: Wt, n: usize, bias: Option<&[f32]>) -> Vec<f32> {
    let rows = x.len() / k.max(1);
    let mut y = match w {
        Wt::Panels(p) => return super::sgemm::matmul_new((rows, n, k), x, k, p, bias),
        Wt::Rows(w) => gemm_new((rows, n, k), View::rows(x, k), View::rows(w, k).t(), true),
        Wt::Cols(wt) => gemm_new((rows, n, k), View::rows(x, k), View::rows(wt, n), true),
    };
    if let Some(b) = bias {
        y.par_chunks_mut(n)
            .with_min_len(min_split())
            .for_each(|r| r.iter_mut().zip(b).for_each(|(o, b)| *o += b));
    }
    y
}

/// `dy · w` (rows, k) for a linear weight `w` (n, k) and `dy` (rows, n).
fn input_grad_new(dy: &[f32], n: usize, w: Wt, k: usize) -> Vec<f32> {
    let rows = dy.len() / n.max(1);
    let a = View::rows(dy, n);
    match w {
        Wt::Panels(p) => gemm_by_panels_new((rows, k, n), a, p, true),
        Wt::Rows(w) => gemm_new((rows, k, n), a, View::rows(w, k), true),
        Wt::Cols(wt) => gemm_new((rows, k, n), a, View::rows(wt, n).t(), true),
    }
}

/// `dx (+)= dy · w` for a linear weight `w` (n, k) and `dy` (rows, n).
fn input_grad(dy: &[f32], n: usize, w: Wt, k: usize, dx: &mut [f32], accumulate: bool) {
    let rows = dy.len() / n.max(1);
    let a = View::rows(dy, n);
    match w {
        Wt::Panels(p) => super::sgemm::gemm_by_panels((rows, k, n), a, p, dx, accumulate, true),
        Wt::Rows(w) => gemm((rows, k, n), a, View::rows(w, k), dx, accumulate, true),
        Wt::Cols(wt) => gemm((rows, k, n), a, View::rows(wt, n).t(), dx, accumulate, true),
    }
}

/// `acc (+)= dyᵀ · x` (n, k): a weight's gradient from its output's gradient `dy` (rows, n)
/// and its input `x` (rows, k), added in place to what `acc` holds (earlier micro-batches'
/// gradients, see [`GradSink`]) or into a new vector.
fn weight_grad(dy: &[f32], n: usize, x: &[f32], k: usize, acc: &mut Option<Vec<f32>>) {
    let rows = dy.len() / n.max(1);
    let (a, b) = (View::rows(dy, n).t(), View::rows(x, k));
    match acc {
        Some(c) => gemm((n, k, rows), a, b, c, true, true),
        None => *acc = Some(gemm_new((n, k, rows), a, b, true)),
    }
}

/// `acc += g`, or `acc = g` when it holds nothing yet.
fn add_to(acc: &mut Option<Vec<f32>>, g: Vec<f32>) {
    match acc {
        Some(a) => a.iter_mut().zip(&g).for_each(|(a, g)| *a += g),
        None => *acc = Some(g),
    }
}

/// Column sums of `dy` (rows, n): a bias's gradient, summed over fixed blocks of rows in
/// order (reproducible whatever the threads).
fn column_sums(dy: &[f32], n: usize) -> Vec<f32> {
    block_sums(dy, n, |block, acc| {
        for row in block.chunks_exact(n) {
            acc.iter_mut().zip(row).for_each(|(a, v)| *a += v);
        }
    })
}

/// Rows of fixed-size blocks folded into one `d`-wide sum per block by `f`, the block sums
/// added in order.
fn block_sums(data: &[f32], d: usize, f: impl Fn(&[f32], &mut [f32]) + Sync) -> Vec<f32> {
    const BLOCK: usize = 64;
    let partial: Vec<Vec<f32>> = data
        .par_chunks(d * BLOCK)
        .with_min_len(min_split())
        .map(|block| {
            let mut acc = vec![0f32; d];
            f(block, &mut acc);
            acc
        })
        .collect();
    let mut out = vec![0f32; d];
    for p in &partial {
        out.iter_mut().zip(p).for_each(|(a, b)| *a += b);
    }
    out
}

/// One head's rows of a (tokens, heads·hd) matrix: from element `start`, row stride `rs`.
fn head(t: &[f32], start: usize, rs: usize) -> View<'_> {
    View {
        data: &t[start..],
        rs,
        cs: 1,
    }
}

/// A norm's weight the layer always has.
fn norm<'a>(w: &Weights<'a>, slot: usize) -> &'a [f32] {
    w.vec(slot).expect("train-layer: the layer's norm weights")
}

fn min_split() -> usize {
    crate::workers::min_split()
}

/// The rotation of `heads` heads per token in place (`sign` −1: its inverse, the backward).
fn rope_rows(
    x: &mut [f32],
    heads: usize,
    hd: usize,
    dims: &Dims,
    cos: &[f32],
    sin: &[f32],
    sign: f32,
) {
    let half = hd / 2;
    x.par_chunks_mut(hd)
        .enumerate()
        .with_min_len(min_split())
        .for_each(|(row, xr)| {
            let t = (row / heads) % dims.seq;
            let (c, s) = (&cos[t * half..][..half], &sin[t * half..][..half]);
            for i in 0..half {
                let (a, b) = (xr[i], xr[i + half]);
                let sv = sign * s[i];
                xr[i] = a * c[i] - b * sv;
                xr[i + half] = b * c[i] + a * sv;
            }
        });
}

impl Layer {
    fn softmax(&self, len: usize, scale: f32) -> ScaledMaskedSoftmax {
        ScaledMaskedSoftmax {
            scale,
            causal: self.causal,
            seq_q: len,
            rows_per_batch: len,
            left_pad: Vec::new(),
        }
    }

    /// Attention's blocks of query rows `(first, end, keys)` for a segment of `len`: with a
    /// causal mask, blocks of 64 rows each see only the keys up to their last row (about
    /// half the products of the full square); otherwise one block over every key.
    fn row_blocks(&self, len: usize) -> Vec<(usize, usize, usize)> {
        const ROWS: usize = 64;
        if !self.causal {
            return vec![(0, len, len)];
        }
        (0..len)
            .step_by(ROWS)
            .map(|r0| {
                let r1 = (r0 + ROWS).min(len);
                (r0, r1, r1)
            })
            .collect()
    }

    /// The (segment, key/value head) tasks.
    fn tasks(&self) -> Vec<((usize, usize), usize)> {
        let nkv = self.dims.nkv;
        self.segments
            .iter()
            .flat_map(|&s| (0..nkv).map(move |g| (s, g)))
            .collect()
    }

    fn forward_pass(&self, w: &Weights, x: &[f32], output: bool) -> (Vec<f32>, Saved) {
        let d = self.dims;
        let (h, nh, nkv, hd) = (d.h, d.nh, d.nkv, d.hd);
        let bias = |slot: usize| w.vec(BIAS + slot);
        let (h1, r1) = rms_rows(x, norm(w, N_IN), d.eps[0]);
        let q = linear(&h1, h, w.get(WQ), nh * hd, bias(WQ));
        let k = linear(&h1, h, w.get(WK), nkv * hd, bias(WK));
        let v = linear(&h1, h, w.get(WV), nkv * hd, bias(WV));
        let (mut qr, rq) = match w.vec(N_Q) {
            Some(n) => rms_rows(&q, n, d.eps[2]),
            None => (q.clone(), Vec::new()),
        };
        let (mut kr, rk) = match w.vec(N_K) {
            Some(n) => rms_rows(&k, n, d.eps[3]),
            None => (k.clone(), Vec::new()),
        };
        rope_rows(&mut qr, nh, hd, &d, &self.cos, &self.sin, 1.0);
        rope_rows(&mut kr, nkv, hd, &d, &self.cos, &self.sin, 1.0);
        // Attention, each (segment, key/value head) on one thread.
        let rep = nh / nkv;
        let scale = (hd as f64).powf(-0.5) as f32;
        let (qs, ks) = (nh * hd, nkv * hd);
        let tasks = self.tasks();
        let parts: Vec<(Vec<f32>, Vec<f32>)> = tasks
            .par_iter()
            .with_min_len(min_split())
            .map(|&((st, len), g)| {
                let sm = self.softmax(len, scale);
                let mut probs = vec![0f32; rep * len * len];
                let mut out = vec![0f32; rep * len * hd];
                let mut scores = vec![0f32; len * len];
                let kv = View {
                    data: &kr[st * ks + g * hd..],
                    rs: 1,
                    cs: ks,
                };
                let vv = head(&v, st * ks + g * hd, ks);
                for r in 0..rep {
                    let hq = g * rep + r;
                    let p = &mut probs[r * len * len..][..len * len];
                    let o_h = &mut out[r * len * hd..][..len * hd];
                    for &(r0, r1, kend) in &self.row_blocks(len) {
                        let rb = r1 - r0;
                        let qv = head(&qr, (st + r0) * qs + hq * hd, qs);
                        let blk = &mut scores[..rb * kend];
                        gemm((rb, kend, hd), qv, kv, blk, false, false);
                        for (ii, srow) in blk.chunks_exact(kend).enumerate() {
                            sm.row(r0 + ii, srow, &mut p[(r0 + ii) * len..][..kend]);
                        }
                        gemm(
                            (rb, hd, kend),
                            head(p, r0 * len, len),
                            vv,
                            &mut o_h[r0 * hd..][..rb * hd],
                            false,
                            false,
                        );
                    }
                }
                (probs, out)
            })
            .collect();
        let mut o = vec![0f32; d.t * qs];
        let mut probs = Vec::with_capacity(tasks.len());
        for (&((st, len), g), (p, out)) in tasks.iter().zip(parts) {
            for r in 0..rep {
                let hq = g * rep + r;
                for i in 0..len {
                    o[(st + i) * qs + hq * hd..][..hd]
                        .copy_from_slice(&out[(r * len + i) * hd..][..hd]);
                }
            }
            probs.push(p);
        }
        let a = linear(&o, qs, w.get(WO), h, bias(WO));
        let mut x2 = a;
        x2.iter_mut().zip(x).for_each(|(o, v)| *o += v);
        let (h2, r2) = rms_rows(&x2, norm(w, N_POST), d.eps[1]);
        let g = linear(&h2, h, w.get(WG), d.inter, bias(WG));
        let u = linear(&h2, h, w.get(WU), d.inter, bias(WU));
        let y = if output {
            let m = super::fastmath::par_map2(&g, &u, super::fastmath::swiglu_slice);
            let mut y = linear(&m, d.inter, w.get(WD), h, bias(WD));
            y.iter_mut().zip(&x2).for_each(|(o, v)| *o += v);
            y
        } else {
            Vec::new()
        };
        let keep_qk = w.vec(N_Q).is_some() || w.vec(N_K).is_some();
        let saved = Saved {
            x: x.to_vec(),
            r1,
            r2,
            rq,
            rk,
            h1,
            q: if keep_qk { q } else { Vec::new() },
            k: if keep_qk { k } else { Vec::new() },
            qr,
            kr,
            v,
            probs,
            o,
            x2,
            h2,
            g,
            u,
        };
        (y, saved)
    }

    /// [`Layer::backward_pass`] adding the trainable tensors' gradients to the sink
    /// installed on this thread, if any (then returned `sunk`, the gradients all `None`),
    /// else returning them by slot.
    #[allow(clippy::type_complexity)]
    fn backward_sinking(
        &self,
        w: &Weights,
        saved: &Saved,
        dy: &[f32],
    ) -> Result<(Option<Vec<f32>>, Vec<Option<Vec<f32>>>, bool)> {
        let mut grads = vec![None; SLOTS];
        // With a sink installed, the backward adds to the running sums it holds.
        let mut sink = SINK.with(|s| s.borrow_mut().take());
        let owned = |slot: usize| self.weights[slot].as_ref().filter(|_| self.trainable[slot]);
        if let Some(sink) = sink.as_mut() {
            for (slot, g) in grads.iter_mut().enumerate() {
                if let Some(t) = owned(slot) {
                    *g = sink.take(t);
                }
            }
        }
        let dx = self.backward_pass(w, saved, dy, &mut grads);
        let sunk = sink.is_some();
        if let Some(sink) = sink.as_mut() {
            for (slot, g) in grads.iter_mut().enumerate() {
                if let (Some(t), Some(g)) = (owned(slot), g.take()) {
                    sink.0.insert(t.id(), g);
                }
            }
        }
        SINK.with(|s| *s.borrow_mut() = sink);
        Ok((dx, grads, sunk))
    }

    /// The input's gradient (when needed) from the output's `dy`; the trainable tensors'
    /// gradients into `grads` by slot.
    fn backward_pass(
        &self,
        w: &Weights,
        s: &Saved,
        dy: &[f32],
        grads: &mut [Option<Vec<f32>>],
    ) -> Option<Vec<f32>> {
        let d = self.dims;
        let (h, nh, nkv, hd, inter) = (d.h, d.nh, d.nkv, d.hd, d.inter);
        let (qs, ks) = (nh * hd, nkv * hd);
        let tr = |slot: usize| self.trainable[slot];
        // MLP: y = x2 + down(silu(g)·u).
        if tr(WD) {
            let m = super::fastmath::par_map2(&s.g, &s.u, super::fastmath::swiglu_slice);
            weight_grad(dy, h, &m, inter, &mut grads[WD]);
        }
        if tr(BIAS + WD) {
            add_to(&mut grads[BIAS + WD], column_sums(dy, h));
        }
        let dm = input_grad_new(dy, h, w.get(WD), inter);
        let mut dg = vec![0f32; d.t * inter];
        let mut du = vec![0f32; d.t * inter];
        {
            const CHUNK: usize = super::fastmath::CHUNK;
            dg.par_chunks_mut(CHUNK)
                .zip(du.par_chunks_mut(CHUNK))
                .zip(s.g.par_chunks(CHUNK).zip(s.u.par_chunks(CHUNK)))
                .zip(dm.par_chunks(CHUNK))
                .with_min_len(min_split())
                .for_each(|(((dg, du), (g, u)), dm)| {
                    super::fastmath::swiglu_grad_slice(g, u, dm, dg, du)
                });
        }
        drop(dm);
        for (slot, grad) in [(WG, &dg), (WU, &du)] {
            if tr(slot) {
                weight_grad(grad, inter, &s.h2, h, &mut grads[slot]);
            }
            if tr(BIAS + slot) {
                add_to(&mut grads[BIAS + slot], column_sums(grad, inter));
            }
        }
        let mut dh2 = input_grad_new(&dg, inter, w.get(WG), h);
        input_grad(&du, inter, w.get(WU), h, &mut dh2, true);
        drop((dg, du));
        // x2's gradient: the residual's and the norm's.
        let mut dx2 = dy.to_vec();
        if let Some(dw) = rms_rows_backward(
            &s.x2,
            &s.r2,
            norm(w, N_POST),
            &dh2,
            &mut dx2,
            true,
            tr(N_POST),
        ) {
            add_to(&mut grads[N_POST], dw);
        }
        drop(dh2);
        // Attention's output projection.
        if tr(WO) {
            weight_grad(&dx2, h, &s.o, qs, &mut grads[WO]);
        }
        if tr(BIAS + WO) {
            add_to(&mut grads[BIAS + WO], column_sums(&dx2, h));
        }
        let dout = input_grad_new(&dx2, h, w.get(WO), qs);
        // Attention, per (segment, key/value head).
        let rep = nh / nkv;
        let scale = (hd as f64).powf(-0.5) as f32;
        let tasks = self.tasks();
        let parts: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = tasks
            .par_iter()
            .zip(s.probs.par_iter())
            .with_min_len(min_split())
            .map(|(&((st, len), g), probs)| {
                let mut dq = vec![0f32; rep * len * hd];
                let mut dk = vec![0f32; len * hd];
                let mut dv = vec![0f32; len * hd];
                let mut dp = vec![0f32; len * len];
                let kv = |t| head(t, st * ks + g * hd, ks);
                for r in 0..rep {
                    let hq = g * rep + r;
                    let p = &probs[r * len * len..][..len * len];
                    for &(r0, r1, kend) in &self.row_blocks(len) {
                        let rb = r1 - r0;
                        let rows = |t| head(t, (st + r0) * qs + hq * hd, qs);
                        let pb = head(p, r0 * len, len);
                        // dP = dO · vᵀ; dv += Pᵀ · dO (the block's rows, its keys).
                        let blk = &mut dp[..rb * kend];
                        gemm((rb, kend, hd), rows(&dout), kv(&s.v).t(), blk, false, false);
                        gemm(
                            (kend, hd, rb),
                            pb.t(),
                            rows(&dout),
                            &mut dv[..kend * hd],
                            true,
                            false,
                        );
                        // dS = P ∘ (dP − Σ P∘dP) · scale, in place of dP.
                        for (ii, dr) in blk.chunks_exact_mut(kend).enumerate() {
                            let pr = &p[(r0 + ii) * len..][..kend];
                            let dot: f32 = pr.iter().zip(dr.iter()).map(|(a, b)| a * b).sum();
                            for (o, &pv) in dr.iter_mut().zip(pr) {
                                *o = pv * (*o - dot) * scale;
                            }
                        }
                        let ds = View::rows(&dp[..rb * kend], kend);
                        // dq = dS · k; dk += dSᵀ · q.
                        gemm(
                            (rb, hd, kend),
                            ds,
                            kv(&s.kr),
                            &mut dq[(r * len + r0) * hd..][..rb * hd],
                            false,
                            false,
                        );
                        gemm(
                            (kend, hd, rb),
                            ds.t(),
                            rows(&s.qr),
                            &mut dk[..kend * hd],
                            true,
                            false,
                        );
                    }
                }
                (dq, dk, dv)
            })
            .collect();
        drop(dout);
        let mut dq = vec![0f32; d.t * qs];
        let mut dk = vec![0f32; d.t * ks];
        let mut dv = vec![0f32; d.t * ks];
        for (&((st, len), g), (pq, pk, pv)) in tasks.iter().zip(parts) {
            for i in 0..len {
                for r in 0..rep {
                    let hq = g * rep + r;
                    dq[(st + i) * qs + hq * hd..][..hd]
                        .copy_from_slice(&pq[(r * len + i) * hd..][..hd]);
                }
                dk[(st + i) * ks + g * hd..][..hd].copy_from_slice(&pk[i * hd..][..hd]);
                dv[(st + i) * ks + g * hd..][..hd].copy_from_slice(&pv[i * hd..][..hd]);
            }
        }
        // Undo the rotation, then the q/k norms.
        rope_rows(&mut dq, nh, hd, &d, &self.cos, &self.sin, -1.0);
        rope_rows(&mut dk, nkv, hd, &d, &self.cos, &self.sin, -1.0);
        for (slot, raw, r, grad) in [(N_Q, &s.q, &s.rq, &mut dq), (N_K, &s.k, &s.rk, &mut dk)] {
            if let Some(nw) = w.vec(slot) {
                let mut dx = vec![0f32; grad.len()];
                if let Some(dw) = rms_rows_backward(raw, r, nw, grad, &mut dx, false, tr(slot)) {
                    add_to(&mut grads[slot], dw);
                }
                *grad = dx;
            }
        }
        // q, k, v projections.
        for (slot, grad, n) in [(WQ, &dq, qs), (WK, &dk, ks), (WV, &dv, ks)] {
            if tr(slot) {
                weight_grad(grad, n, &s.h1, h, &mut grads[slot]);
            }
            if tr(BIAS + slot) {
                add_to(&mut grads[BIAS + slot], column_sums(grad, n));
            }
        }
        let want_norm = tr(N_IN);
        if !self.need_dx && !want_norm {
            return None;
        }
        let mut dh1 = input_grad_new(&dq, qs, w.get(WQ), h);
        input_grad(&dk, ks, w.get(WK), h, &mut dh1, true);
        input_grad(&dv, ks, w.get(WV), h, &mut dh1, true);
        if let Some(dw) =
            rms_rows_backward(&s.x, &s.r1, norm(w, N_IN), &dh1, &mut dx2, true, want_norm)
        {
            add_to(&mut grads[N_IN], dw);
        }
        self.need_dx.then_some(dx2)
    }
}

impl candle_core::CustomOp1 for Layer {
    fn name(&self) -> &'static str {
        "train-layer"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = self.dims;
        if layout.shape().elem_count() != d.t * d.h {
            candle_core::bail!("train-layer: input {:?}", layout.dims());
        }
        let x = cpu_rows(storage, layout)?;
        let (y, saved) = with_weights(&self.weights, |w| Ok(self.forward_pass(w, x, true)))?;
        *self.saved.lock().expect("train-layer: saved state") = Some(saved);
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let Some(saved) = self.saved.lock().expect("train-layer: saved state").take() else {
            candle_core::bail!("train-layer: a second backward pass through one forward pass");
        };
        let dy = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let (dx, grads, sunk) =
            with_weights(&self.weights, |w| self.backward_sinking(w, &saved, &dy))?;
        *self.cell.lock().expect("train-layer: gradient cell") = Handover { grads, sunk };
        let any_trainable = self.trainable.iter().any(|&t| t);
        Ok(match dx {
            Some(dx) => Some(Tensor::from_vec(dx, arg.shape(), arg.device())?),
            // The trainable tensors' nodes sit on the input's path, and candle's backward
            // expects a gradient for every node of the graph.
            None if any_trainable => Some(arg.zeros_like()?),
            None => None,
        })
    }
}

/// Identity on the layer's input `x`; backward, the input's gradient passed through and
/// the weight `slot`'s gradient from the layer's backward (see the module's doc).
struct Inject {
    cell: Arc<Mutex<Handover>>,
    slot: usize,
}

impl candle_core::CustomOp2 for Inject {
    fn name(&self) -> &'static str {
        "train-layer-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        _s2: &CpuStorage,
        _l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Ok((
            CpuStorage::F32(cpu_rows(s1, l1)?.to_vec()),
            l1.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let mut cell = self.cell.lock().expect("train-layer: gradient cell");
        let gw = match cell.grads.get_mut(self.slot).and_then(Option::take) {
            Some(gw) => Some(Tensor::from_vec(gw, w.shape(), w.device())?),
            None if cell.sunk => None,
            None => candle_core::bail!("train-layer: no gradient for weight slot {}", self.slot),
        };
        Ok((Some(grad.clone()), gw))
    }
}
