//! One optimizer step at a time: gradients of the mean supervised-token loss of a batch with
//! respect to the trainable decoder layers only, gradient-norm clipping, AdamW.
//!
//! Layers below the first trainable one (and the vision tower) run with the fast inference
//! kernels and weights laid out for them, and build no autograd graph; the rest run with
//! differentiable ops. On the CPU in f32 each of those layers runs as one pass kept for
//! its backward (`model::train_layer::Pending`), outside candle's graph, which then holds
//! only the final norm, the LM head and the loss; the layers' backward passes go down from
//! the top, adding the trained weights' gradients to a gradient sink. With gradient
//! checkpointing only each layer's input is kept during the forward pass, and the backward
//! pass goes layer by layer from the top, recomputing each layer and pulling the incoming
//! gradient through it, so memory holds one layer's activations at a time; on the CPU in
//! f32 the last layer's pass is kept instead of recomputed, and a recomputed layer skips
//! its output, which the backward does not need.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};

use super::adamw::{sum_of_squares, update_scaled, update_tensors, AdamW, AdamWConfig, Moments};
use crate::data::labels::Supervised;
use crate::model::loss::{cross_entropy_sum, kl_div_sum};
use crate::model::ops::Grad;
use crate::model::train_layer::{sinking, GradSink};
use crate::model::{Model, ModelInputs};
use crate::workers::on_threads;

/// Name prefix of decoder layer tensors in a Qwen3-VL checkpoint.

#[derive(Debug, Clone, Copy)]
pub struct TrainOptions {
    pub grad_checkpoint: bool,
    /// Conversations packed into one forward/backward pass (attention stays within each).
    pub micro_batch: usize,
    /// Global gradient-norm clip (0: none).
    pub max_grad_norm: f64,
    pub adamw: AdamWConfig,
    /// Threads that each take a share of every micro-batch's conversations (data
    /// parallelism; at most `micro_batch` are used). Their gradients are added in worker
    /// order, so results are reproducible for a given count.
    pub workers: usize,
    /// Where AdamW, the gradient norm and clipping run. None: on a GPU with tensor ops on
    /// it (weights, gradients and moments never leave it); on the CPU in host loops split
    /// over the workers. Some(true) forces the tensor ops anywhere (they give the host
    /// loops' bits on the CPU), Some(false) the host loops.
    pub tensor_update: Option<bool>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            grad_checkpoint: false,
            micro_batch: 1,
            max_grad_norm: 1.0,
            adamw: AdamWConfig::default(),
            workers: 1,
            tensor_update: None,
        }
    }
}

/// A trainable tensor and its name in the loaded checkpoint.
pub struct Param {
    pub name: String,
    pub var: Var,
    /// Its shape in a checkpoint file (differs from the variable's only for the vision
    /// patch embedding, a Conv3d weight the model holds as a matrix).
    pub stored_shape: Vec<usize>,
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Mean cross-entropy over the supervised tokens of the whole batch.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub lr: f64,
    /// Supervised tokens of the batch.
    pub supervised_tokens: usize,
    /// All input tokens of the batch.
    pub input_tokens: usize,
}

/// Healing by distillation: a teacher (the dense model the student was pruned from) whose
/// next-token distributions at the supervised positions the student learns to match, mixed
/// with cross-entropy: loss = (1 − weight) · CE + weight · T² · KL(teacher ‖ student) at
/// temperature T. The teacher runs without gradients.
pub struct Distill {
    pub teacher: Model,
    /// Leading decoder layers the student and the teacher share bit for bit, all below the
    /// student's first trainable layer: the teacher starts from the student's hidden state
    /// after them instead of computing them again.
    pub shared: usize,
    /// The teacher embeds the inputs itself (its token embeddings or vision tower differ
    /// from the student's; then nothing is shared).
    pub own_embedding: bool,
    pub temperature: f64,
    pub weight: f64,
}

/// Whether two tensors hold the same values (same shape and type, every element equal).
fn same_values(a: &Tensor, b: &Tensor) -> Result<bool> {
    if a.dims() != b.dims() || a.dtype() != b.dtype() {
        return Ok(false);
    }
    Ok(a.eq(b)?.flatten_all()?.min(0)?.to_scalar::<u8>()? == 1)
}

impl Distill {
    /// Checks the distillation settings (also before any data or model is read, by the
    /// commands that take them).
    pub fn check_settings(temperature: f64, weight: f64) -> Result<()> {
        if !(temperature > 0.0 && temperature.is_finite()) {
            bail!("--distill-temperature must be positive, got {temperature}");
        }
        if !(0.0..=1.0).contains(&weight) {
            bail!("--distill-weight must be in [0, 1], got {weight}");
        }
        Ok(())
    }

    /// Prepares `teacher` for `student` (as loaded, before it becomes a [`Trainer`]),
    /// whose first trainable layer is at position `first_trainable`: finds what they share
    /// by comparing weights, and lays the teacher out for inference.
    pub fn new(
        student: &mut Model,
        mut teacher: Model,
        first_trainable: usize,
        temperature: f64,
        weight: f64,
    ) -> Result<Self> {
        Self::check_settings(temperature, weight)?;
        let (sv, tv) = (
            student.config.text.vocab_size,
            teacher.config.text.vocab_size,
        );
        if sv != tv {
            bail!("the teacher's vocabulary has {tv} entries, the student's {sv}");
        }
        let (visual, embed) = (student.names.visual_prefix(), student.names.embed_tokens());
        let embedding = |name: &str| name.starts_with(&visual) || name == embed;
        let teacher_embedding: std::collections::HashMap<String, Tensor> = teacher
            .params_mut()
            .into_iter()
            .filter(|(n, _)| embedding(n))
            .map(|(n, t)| (n, t.clone()))
            .collect();
        let mut own_embedding = false;
        for (name, t) in student.params_mut() {
            if embedding(&name)
                && !teacher_embedding
                    .get(&name)
                    .map(|u| same_values(t, u))
                    .transpose()?
                    .unwrap_or(false)
            {
                own_embedding = true;
                break;
            }
        }
        let mut shared = 0;
        if !own_embedding {
            let limit = first_trainable
                .min(student.layers.len())
                .min(teacher.layers.len());
            'layers: for pos in 0..limit {
                let (a, b) = (&mut student.layers[pos], &mut teacher.layers[pos]);
                if a.original_index != pos || b.original_index != pos {
                    break;
                }
                let theirs: Vec<Tensor> =
                    b.params_mut().into_iter().map(|(_, t)| t.clone()).collect();
                let ours = a.params_mut();
                if ours.len() != theirs.len() {
                    break;
                }
                for ((_, t), u) in ours.into_iter().zip(&theirs) {
                    if !same_values(t, u)? {
                        break 'layers;
                    }
                }
                shared = pos + 1;
            }
        }
        teacher.lay_out_for_forward(|_| true)?;
        Ok(Self {
            teacher,
            shared,
            own_embedding,
            temperature,
            weight,
        })
    }

    /// The teacher's logits (f32) at `positions`, from hidden state `h` after its first
    /// `start` layers (the student's after the shared ones; its own embedding and 0).
    fn logits(
        &self,
        emb: &crate::model::Embedded,
        h: Tensor,
        start: usize,
        positions: &[u32],
    ) -> Result<Tensor> {
        let n = self.teacher.layers.len();
        let stack: Vec<usize> = (0..n).collect();
        let h = self
            .teacher
            .run_stack(emb, &stack, h, start..n, Grad::None)?;
        Ok(self
            .teacher
            .logits_at(&h, positions, Grad::None)?
            .to_dtype(DType::F32)?)
    }
}

pub struct Trainer {
    pub model: Model,
    pub params: Vec<Param>,
    /// Positions (in the loaded model) of the trainable layers, ascending.
    pub trainable: Vec<usize>,
    pub opt: AdamW,
    pub options: TrainOptions,
    /// Every tensor is trainable (embeddings, vision tower, all layers, norm, head).
    pub whole: bool,
    /// Per parameter, the factor its learning rate is multiplied by (1 unless
    /// [`Trainer::scale_lr`] changed it).
    pub lr_scale: Vec<f64>,
    /// The dtype the model computes in. The parameters (`params`) are f32 master weights
    /// whatever it is; in bf16 the model holds their bf16 casts, made again after every
    /// update, so an update smaller than bf16's resolution accumulates in the master
    /// instead of being rounded away, and the saved model is rounded once at the end.
    pub compute: DType,
    /// Distillation from a teacher (`finetune --distill`); None: cross-entropy alone.
    pub distill: Option<Distill>,
}

/// The tensor the model computes with for a master weight: the master itself in f32 (the
/// same storage, so updates show at once), else its cast, an op in the autograd graph
/// through which gradients reach the f32 master.
fn compute_view(var: &Var, dtype: DType) -> candle_core::Result<Tensor> {
    if dtype == DType::F32 {
        Ok(var.as_tensor().clone())
    } else {
        var.as_tensor().to_dtype(dtype)
    }
}

impl Trainer {
    /// Makes the layers at `positions` of `model` trainable: f32 master copies of their
    /// weights, computed with in the model's dtype. For bf16, load the model with
    /// [`Model::load_with_f32_layers`] so that the masters start from the
    /// checkpoint's exact values.
    pub fn new(mut model: Model, positions: &[usize], options: TrainOptions) -> Result<Self> {
        let mut trainable = positions.to_vec();
        trainable.sort_unstable();
        trainable.dedup();
        if trainable.is_empty() {
            bail!("no layer to fine-tune");
        }
        let n = model.layers.len();
        if let Some(&bad) = trainable.iter().find(|&&p| p >= n) {
            bail!("layer position {bad} is beyond the model's {n} decoder layers");
        }
        // No gradient flows through the vision tower or the layers below the first trained
        // one: lay their weights out for the forward product.
        let first = trainable[0];
        let names = model.names.clone();
        let layer_prefix = names.layers_prefix();
        model.lay_out_for_forward(|name| {
            name.starts_with(&names.visual_prefix())
                || names.split_layer(name).is_some_and(|(i, _)| i < first)
        })?;
        let compute = model.dtype();
        let mut params = Vec::new();
        for &pos in &trainable {
            for (name, t) in model.layers[pos].params_mut() {
                let var = Var::from_tensor(&t.to_dtype(DType::F32)?)?;
                *t = compute_view(&var, compute)?;
                params.push(Param {
                    name: format!("{layer_prefix}{pos}.{name}"),
                    stored_shape: var.dims().to_vec(),
                    var,
                });
            }
        }
        Ok(Self::assemble(
            model, params, trainable, options, false, compute,
        ))
    }

    /// The trainer for `params` of `model`, with a fresh AdamW state for them.
    fn assemble(
        model: Model,
        params: Vec<Param>,
        trainable: Vec<usize>,
        options: TrainOptions,
        whole: bool,
        compute: DType,
    ) -> Self {
        let sizes: Vec<usize> = params.iter().map(|p| p.var.elem_count()).collect();
        let opt = AdamW::new(options.adamw, &sizes);
        let lr_scale = vec![1.0; params.len()];
        Self {
            model,
            params,
            trainable,
            opt,
            options,
            whole,
            lr_scale,
            compute,
            distill: None,
        }
    }

    /// Makes the model's copies of the trainable tensors again from the masters (after an
    /// update, or after the masters were loaded from a checkpoint). Nothing to do in f32.
    fn sync_compute_weights(&mut self) -> Result<()> {
        if self.compute == DType::F32 {
            return Ok(());
        }
        let masters: std::collections::HashMap<&str, &Var> = self
            .params
            .iter()
            .map(|p| (p.name.as_str(), &p.var))
            .collect();
        for (name, t) in self.model.params_mut() {
            if let Some(var) = masters.get(name.as_str()) {
                *t = compute_view(var, self.compute)?;
            }
        }
        Ok(())
    }

    /// Multiplies the learning rate of every parameter whose name starts with `prefix` by
    /// `factor` (e.g. a lower rate for the vision tower, `model.visual.`). Returns how many
    /// parameters it applies to.
    pub fn scale_lr(&mut self, prefix: &str, factor: f64) -> usize {
        let mut n = 0;
        for (p, s) in self.params.iter().zip(self.lr_scale.iter_mut()) {
            if p.name.starts_with(prefix) {
                *s *= factor;
                n += 1;
            }
        }
        n
    }

    /// Makes every tensor of `model` trainable (f32 master copies, computed with in
    /// `compute`): token embeddings (and the LM head, tied or not), the whole vision tower,
    /// all decoder layers and the final norm. The embedding and vision path then runs with
    /// differentiable ops too. Load the model in f32 so that the masters are exact.
    pub fn whole_model(mut model: Model, options: TrainOptions, compute: DType) -> Result<Self> {
        if options.grad_checkpoint {
            bail!("gradient checkpointing is not supported when every tensor is trained");
        }
        let mut named = Vec::new();
        for (name, t) in model.params_mut() {
            let var = Var::from_tensor(&t.to_dtype(DType::F32)?)?;
            *t = compute_view(&var, compute)?;
            named.push((name, var));
        }
        model.set_compute_dtype(compute);
        let params: Vec<Param> = named
            .into_iter()
            .map(|(name, var)| Param {
                stored_shape: model.stored_shape(&name, var.dims()),
                name,
                var,
            })
            .collect();
        let trainable = (0..model.layers.len()).collect();
        Ok(Self::assemble(
            model, params, trainable, options, true, compute,
        ))
    }

    fn device(&self) -> &Device {
        self.model.device()
    }

    /// Gradients of (sum of the micro-batch's supervised-token losses) × `scale`,
    /// accumulated into `acc` (one per parameter, None until it gets one). The
    /// conversations are packed into one sequence. Returns the unscaled loss sum.
    pub fn accumulate_gradients(
        &self,
        micro: &[Supervised],
        scale: f64,
        acc: &mut [Option<Tensor>],
    ) -> Result<f64> {
        let mut sink = GradSink::default();
        let loss = sinking(&mut sink, || self.accumulate_sunk(micro, scale, acc))?;
        self.drain(&mut sink, acc)?;
        Ok(loss)
    }

    /// Adds the gradients summed in `sink` to `acc`.
    fn drain(&self, sink: &mut GradSink, acc: &mut [Option<Tensor>]) -> Result<()> {
        for (p, a) in self.params.iter().zip(acc.iter_mut()) {
            if let Some(g) = sink.take(p.var.as_tensor()) {
                add_into(a, &Tensor::from_vec(g, p.var.shape(), self.device())?)?;
            }
        }
        Ok(())
    }

    /// [`Trainer::accumulate_gradients`] with a [`GradSink`] installed on this thread: the
    /// gradients of the layers that run as one node (`model::train_layer`, the CPU in f32)
    /// go to the sink, the others to `acc`.
    fn accumulate_sunk(
        &self,
        micro: &[Supervised],
        scale: f64,
        acc: &mut [Option<Tensor>],
    ) -> Result<f64> {
        let model = &self.model;
        let (mut positions, mut labels) = (Vec::new(), Vec::new());
        let mut parts = Vec::with_capacity(micro.len());
        let own = self.distill.as_ref().filter(|d| d.own_embedding);
        let mut teacher_parts = Vec::new();
        let mut offset = 0u32;
        for sup in micro {
            let (p, l) = sup.targets();
            positions.extend(p.iter().map(|&t| t + offset));
            labels.extend(l);
            offset += sup.enc.input_ids.len() as u32;
            let inputs = ModelInputs::from_encoded(&sup.enc, self.device())?;
            let grad = if self.whole { Grad::Track } else { Grad::None };
            parts.push(model.embed(&inputs, grad)?);
            if let Some(d) = own {
                teacher_parts.push(d.teacher.embed(&inputs, Grad::None)?);
            }
        }
        if labels.is_empty() {
            bail!("no supervised tokens");
        }
        let emb = crate::model::Embedded::pack(parts)?;
        let n = model.layers.len();
        let stack: Vec<usize> = (0..n).collect();
        let first = if self.whole { 0 } else { self.trainable[0] };
        // The teacher's logits, from the student's hidden state after the layers they
        // share (or from its own embedding).
        let (h, teacher) = match &self.distill {
            None => (
                model.run_stack(&emb, &stack, emb.embeds.clone(), 0..first, Grad::None)?,
                None,
            ),
            Some(d) if d.own_embedding => {
                let t_emb = crate::model::Embedded::pack(teacher_parts)?;
                let t = d.logits(&t_emb, t_emb.embeds.clone(), 0, &positions)?;
                (
                    model.run_stack(&emb, &stack, emb.embeds.clone(), 0..first, Grad::None)?,
                    Some(t),
                )
            }
            Some(d) => {
                let s = d.shared.min(first);
                let hs = model.run_stack(&emb, &stack, emb.embeds.clone(), 0..s, Grad::None)?;
                let t = d.logits(&emb, hs.clone(), s, &positions)?;
                (
                    model.run_stack(&emb, &stack, hs, s..first, Grad::None)?,
                    Some(t),
                )
            }
        };

        // Layers that run as one node (the CPU in f32) keep their forward passes outside
        // the graph, and their backward passes add the trained weights' gradients to the
        // sink the caller installed; the graph holds only the final norm, the LM head and
        // the loss.
        let as_nodes = !self.whole && model.layers_run_as_nodes(&emb, &stack, first..n, &h);
        if !self.options.grad_checkpoint && as_nodes {
            let mut pending = Vec::with_capacity(n - first);
            let mut h = h;
            for pos in first..n {
                let (y, p) = model
                    .layer_pending(&emb, &stack, pos, &h, pos > first, true)?
                    .context("internal error: a layer that does not run as one node")?;
                h = y.context("internal error: a layer pass without its output")?;
                pending.push(p);
            }
            let top = Var::from_tensor(&h)?;
            drop(h);
            let loss =
                self.head_objective(top.as_tensor(), &positions, &labels, teacher.as_ref())?;
            let grads = (&loss * scale)?.backward()?;
            let mut g = grads
                .get(top.as_tensor())
                .context("no gradient reached the last decoder layer")?
                .clone();
            drop((grads, top));
            while let Some(p) = pending.pop() {
                match p.input_gradient(&g)? {
                    Some(dx) => g = dx,
                    None => break,
                }
            }
            return Ok(loss.to_scalar::<f32>()? as f64);
        }
        if !self.options.grad_checkpoint || self.whole {
            let h = model.run_stack(&emb, &stack, h, first..n, Grad::Track)?;
            let loss = self.head_objective(&h, &positions, &labels, teacher.as_ref())?;
            let grads = (&loss * scale)?.backward()?;
            for (p, a) in self.params.iter().zip(acc.iter_mut()) {
                if let Some(g) = grads.get(p.var.as_tensor()) {
                    add_into(a, g)?;
                }
            }
            return Ok(loss.to_scalar::<f32>()? as f64);
        }

        // On the CPU in f32, the forward without a graph keeps each layer's input but the
        // last layer's, whose pass is kept (its recomputation would come right after); the
        // backward recomputes each layer as one pass without its output, straight to the
        // gradients. The first trained layer's input gets none.
        if as_nodes {
            let mut saved = Vec::with_capacity(n - first);
            let mut h = h;
            for pos in first..n - 1 {
                saved.push(h.clone());
                h = model.run_stack(&emb, &stack, h, pos..pos + 1, Grad::None)?;
            }
            let (y, last) = model
                .layer_pending(&emb, &stack, n - 1, &h, n - 1 > first, true)?
                .context("internal error: a layer that does not run as one node")?;
            drop(h);
            let top =
                Var::from_tensor(&y.context("internal error: a layer pass without its output")?)?;
            let loss =
                self.head_objective(top.as_tensor(), &positions, &labels, teacher.as_ref())?;
            let grads = (&loss * scale)?.backward()?;
            let g = grads
                .get(top.as_tensor())
                .context("no gradient reached the last decoder layer")?
                .clone();
            drop((grads, top));
            let mut g = last.input_gradient(&g)?;
            for pos in (first..n - 1).rev() {
                let Some(dy) = g else { break };
                let (_, p) = model
                    .layer_pending(&emb, &stack, pos, &saved[pos - first], pos > first, false)?
                    .context("internal error: a layer that does not run as one node")?;
                g = p.input_gradient(&dy)?;
            }
            return Ok(loss.to_scalar::<f32>()? as f64);
        }

        // Forward without a graph, keeping each layer's input.
        let mut saved = Vec::with_capacity(n - first);
        let mut h = h;
        for pos in first..n {
            saved.push(h.clone());
            h = model.run_stack(&emb, &stack, h, pos..pos + 1, Grad::None)?;
        }
        let top = Var::from_tensor(&h)?;
        let loss = self.head_objective(top.as_tensor(), &positions, &labels, teacher.as_ref())?;
        let grads = (&loss * scale)?.backward()?;
        let mut g = grads
            .get(top.as_tensor())
            .context("no gradient reached the last decoder layer")?
            .clone();
        // The head's gradients (vocabulary-sized for the logits) and the top's output are
        // not needed while the layers are recomputed.
        drop((grads, top, h));
        let mut param_index = self.params.len();
        for pos in (first..n).rev() {
            let x = Var::from_tensor(&saved[pos - first])?;
            let y = model.run_stack(
                &emb,
                &stack,
                x.as_tensor().clone(),
                pos..pos + 1,
                Grad::Track,
            )?;
            let grads = (y * &g)?.sum_all()?.backward()?;
            if self.trainable.binary_search(&pos).is_ok() {
                let prefix = format!("{}{pos}.", model.names.layers_prefix());
                let start = self.params[..param_index]
                    .iter()
                    .position(|p| p.name.starts_with(&prefix))
                    .context("internal error: trainable layer without parameters")?;
                for (p, a) in self.params[start..param_index]
                    .iter()
                    .zip(acc[start..param_index].iter_mut())
                {
                    if let Some(gp) = grads.get(p.var.as_tensor()) {
                        add_into(a, gp)?;
                    }
                }
                param_index = start;
            }
            if pos > first {
                g = grads
                    .get(x.as_tensor())
                    .context("no gradient reached a layer input")?
                    .clone();
            }
        }
        Ok(loss.to_scalar::<f32>()? as f64)
    }

    /// [`Trainer::objective`] of the logits at `positions` of the decoder output `top`.
    /// Without a teacher, the LM head and the loss are one node of the graph where the
    /// head is stored as panels ([`Model::head_loss`]).
    fn head_objective(
        &self,
        top: &Tensor,
        positions: &[u32],
        labels: &[u32],
        teacher: Option<&Tensor>,
    ) -> Result<Tensor> {
        if teacher.is_none() {
            if let Some(loss) = self.model.head_loss(top, positions, labels)? {
                return Ok(loss);
            }
        }
        let logits = self.model.logits_at(top, positions, Grad::Track)?;
        self.objective(&logits, labels, teacher)
    }

    /// The summed loss of a micro-batch's supervised tokens: cross-entropy, mixed with the
    /// distillation loss when there is a teacher ([`Distill`]).
    fn objective(
        &self,
        logits: &Tensor,
        labels: &[u32],
        teacher: Option<&Tensor>,
    ) -> Result<Tensor> {
        let ce = cross_entropy_sum(logits, labels)?;
        match (&self.distill, teacher) {
            (Some(d), Some(t)) => {
                let kl = kl_div_sum(logits, t, d.temperature)?;
                Ok((ce.affine(1.0 - d.weight, 0.0)? + kl.affine(d.weight, 0.0)?)?)
            }
            _ => Ok(ce),
        }
    }

    /// Gradients (one tensor per parameter) of the mean supervised-token loss of
    /// `batch`, that loss and the number of supervised tokens. Conversations are processed
    /// `micro_batch` at a time; the mean is over all supervised tokens of the batch, as
    /// docs/SPEC.md defines the loss of one optimizer step.
    pub fn gradient_tensors(&self, batch: &[Supervised]) -> Result<(Vec<Tensor>, f64, usize)> {
        let tokens: usize = batch.iter().map(Supervised::num_targets).sum();
        if tokens == 0 {
            bail!("the batch has no supervised tokens");
        }
        let scale = 1.0 / tokens as f64;
        // Each micro-batch is split between the workers, so that they hold no more
        // activations together than one thread does with the whole micro-batch; worker w
        // takes chunks w, w + workers, ...; the sums are added in worker order.
        let micro = self.options.micro_batch.max(1);
        let workers = self.options.workers.clamp(1, micro);
        let size = micro.div_ceil(workers);
        let chunks: Vec<&[Supervised]> = batch.chunks(size).collect();
        let workers = workers.min(chunks.len());
        let run = |w: usize| -> Result<(Vec<Option<Tensor>>, f64)> {
            let mut acc = vec![None; self.params.len()];
            let mut loss = 0.0;
            // Layers that run as one node (model::train_layer, the CPU in f32) add their
            // weights' gradients in place over the micro-batches, outside candle's store.
            let mut sink = GradSink::default();
            for micro in chunks.iter().skip(w).step_by(workers) {
                loss += sinking(&mut sink, || self.accumulate_sunk(micro, scale, &mut acc))?;
            }
            self.drain(&mut sink, &mut acc)?;
            Ok((acc, loss))
        };
        let mut parts = on_threads(workers, run)?.into_iter();
        let (mut acc, mut loss_sum) = parts.next().context("no worker")?;
        for (more, loss) in parts {
            for (a, m) in acc.iter_mut().zip(more) {
                if let Some(m) = m {
                    add_into(a, &m)?;
                }
            }
            loss_sum += loss;
        }
        // A tensor no gradient reached gets zeros.
        let acc = acc
            .into_iter()
            .zip(&self.params)
            .map(|(a, p)| match a {
                Some(a) => Ok(a),
                None => Ok(Tensor::zeros(p.var.shape(), DType::F32, self.device())?),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((acc, loss_sum / tokens as f64, tokens))
    }

    /// [`Trainer::gradient_tensors`] flattened to vectors.
    pub fn gradients(&self, batch: &[Supervised]) -> Result<(Vec<Vec<f32>>, f64, usize)> {
        let (acc, loss, tokens) = self.gradient_tensors(batch)?;
        let grads = acc
            .iter()
            .map(|t| Ok(t.flatten_all()?.to_vec1::<f32>()?))
            .collect::<Result<Vec<_>>>()?;
        Ok((grads, loss, tokens))
    }

    /// Current values of the trainable tensors, flattened.
    pub fn values(&self) -> Result<Vec<Vec<f32>>> {
        self.params
            .iter()
            .map(|p| Ok(p.var.as_tensor().flatten_all()?.to_vec1::<f32>()?))
            .collect()
    }

    pub fn set_values(&mut self, values: Vec<Vec<f32>>) -> Result<()> {
        if values.len() != self.params.len() {
            bail!(
                "{} values for {} trainable tensors",
                values.len(),
                self.params.len()
            );
        }
        for (p, v) in self.params.iter().zip(values) {
            let t = Tensor::from_vec(v, p.var.shape(), self.device())?;
            p.var.set(&t)?;
        }
        self.sync_compute_weights()
    }

    /// Whether the update runs with tensor ops on the model's device (see
    /// [`TrainOptions::tensor_update`]).
    fn tensor_update(&self) -> bool {
        self.options
            .tensor_update
            .unwrap_or(!self.device().is_cpu())
    }

    /// One optimizer step on `batch` at learning rate `lr`. A non-finite loss or gradient
    /// norm is an error and leaves the weights and optimizer untouched. On the CPU the
    /// gradients are read where they are and each master weight is updated in place,
    /// split over rayon's threads, so the step needs no memory beyond the gradients and
    /// moments; on a GPU everything stays there and only the per-tensor squared norms
    /// come back.
    pub fn step(&mut self, batch: &[Supervised], lr: f64) -> Result<StepStats> {
        let (grads, loss, tokens) = self.gradient_tensors(batch)?;
        if self.opt.moments.len() != self.params.len() {
            bail!(
                "the optimizer holds {} tensors, the model {}",
                self.opt.moments.len(),
                self.params.len()
            );
        }
        let on_tensors = self.tensor_update();
        // Per-tensor sums of squares in f64, added in tensor order.
        let sums: Vec<f64> = if on_tensors {
            let sums = grads
                .iter()
                .map(|g| g.to_dtype(DType::F64)?.sqr()?.sum_all())
                .collect::<candle_core::Result<Vec<_>>>()?;
            Tensor::stack(&sums, 0)?.to_vec1::<f64>()?
        } else {
            grads
                .iter()
                .map(|g| cpu_values(g, sum_of_squares))
                .collect::<Result<Vec<_>>>()?
        };
        let grad_norm = sums.iter().sum::<f64>().sqrt();
        if !loss.is_finite() || !grad_norm.is_finite() {
            bail!("the loss is {loss} and the gradient norm {grad_norm}; stopping before the weights are touched");
        }
        let coef = clip_coef(grad_norm, self.options.max_grad_norm);
        self.opt.begin_step();
        let (config, opt_step) = (self.opt.config, self.opt.step);
        if on_tensors {
            for (i, (p, g)) in self.params.iter().zip(&grads).enumerate() {
                let g = match coef {
                    Some(c) => g.affine(c as f64, 0.0)?,
                    None => g.clone(),
                };
                let m = &mut self.opt.moments[i];
                let lr = lr * self.lr_scale[i];
                let v = update_tensors(config, opt_step, m, p.var.as_tensor(), &g, lr)?;
                p.var.set(&v.reshape(p.var.shape())?)?;
            }
        } else {
            // In place, in the master weight's own storage (which an f32 model computes
            // with), each tensor split over rayon's threads (see `update_scaled`).
            for (i, (p, g)) in self.params.iter().zip(&grads).enumerate() {
                let op = InPlaceAdamW {
                    config,
                    step: opt_step,
                    lr: lr * self.lr_scale[i],
                    coef,
                    moments: std::sync::Mutex::new(&mut self.opt.moments[i]),
                };
                p.var.as_tensor().inplace_op2(g, &op)?;
            }
        }
        self.sync_compute_weights()?;
        Ok(StepStats {
            loss,
            grad_norm,
            lr,
            supervised_tokens: tokens,
            input_tokens: batch.iter().map(|s| s.enc.input_ids.len()).sum(),
        })
    }
}

/// `f` of a CPU f32 tensor's values, read where they are (contiguous), or of a copy.
fn cpu_values<T>(t: &Tensor, f: impl FnOnce(&[f32]) -> T) -> Result<T> {
    let (storage, layout) = t.storage_and_layout();
    if let candle_core::Storage::Cpu(cpu) = &*storage {
        if let Ok(v) = crate::model::ops::cpu_f32(cpu, layout) {
            return Ok(f(v));
        }
    }
    drop(storage);
    Ok(f(&t.flatten_all()?.to_vec1::<f32>()?))
}

/// One AdamW update of a master weight in place, its gradient the second operand
/// ([`update_scaled`]).
struct InPlaceAdamW<'a> {
    config: AdamWConfig,
    step: u64,
    lr: f64,
    coef: Option<f32>,
    moments: std::sync::Mutex<&'a mut Moments>,
}

impl candle_core::InplaceOp2 for InPlaceAdamW<'_> {
    fn name(&self) -> &'static str {
        "adamw-in-place"
    }

    fn cpu_fwd(
        &self,
        s1: &mut candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        let g = crate::model::ops::cpu_f32(s2, l2)?;
        let (candle_core::CpuStorage::F32(p), Some((pa, pb))) = (s1, l1.contiguous_offsets())
        else {
            candle_core::bail!("adamw-in-place: the master weight must be f32 and contiguous");
        };
        let mut m = self
            .moments
            .lock()
            .map_err(|_| candle_core::Error::Msg("adamw-in-place: a thread panicked".into()))?;
        update_scaled(
            self.config,
            self.step,
            &mut m,
            &mut p[pa..pb],
            g,
            self.coef,
            self.lr,
        )
        .map_err(|e| candle_core::Error::Msg(format!("{e:#}")))
    }
}

/// `acc += g`, where an empty `acc` takes `g` as it is (no zeros to add to).
fn add_into(acc: &mut Option<Tensor>, g: &Tensor) -> candle_core::Result<()> {
    *acc = Some(match acc.take() {
        Some(a) => (a + g)?,
        None => g.clone(),
    });
    Ok(())
}

/// torch's `clip_grad_norm_` factor: max_norm / (norm + 1e-6) when that is below 1.
pub fn clip_coef(norm: f64, max_norm: f64) -> Option<f32> {
    if max_norm <= 0.0 {
        return None;
    }
    let coef = (max_norm as f32) / (norm as f32 + 1e-6);
    (coef < 1.0).then_some(coef)
}
