//! The model interface every consumer uses, for every family: (vision tower -> image
//! tokens placed at `<|image_pad|>`) -> decoder layers (with Qwen3-VL's DeepStack additions
//! after the first ones) -> final norm -> LM head. The family (`config.json`) decides the
//! parts: the vision tower (Qwen3-VL's or Qwen2-VL's), q/k norms, biases, the rotary tables; the checkpoint's
//! own tensor names ([`TensorNames`]) decide where each part is read from and written to.
//!
//! A [`LayerObserver`] watches the hidden state after the embeddings and after every
//! decoder layer, in transformers' `output_hidden_states` numbering, and may stop the
//! pass early so that nothing past the last needed layer runs.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::config::ModelConfig;
pub use super::decoder::KvSlot;
use super::decoder::{DecoderLayer, RopeTables};
pub use super::dir::TensorNames;
use super::layers::{Linear, RmsNorm};
use super::ops::Grad;
use super::qwen3_vl::rope;
use super::qwen3_vl::vision::VisionOutput;
use super::rope::TextRope;
use super::vision::VisionTower;
use super::weights::{self, TensorInfo};

/// What the decoder consumes for one sequence (batch size 1).
#[derive(Debug, Clone)]
pub struct ModelInputs {
    pub input_ids: Vec<u32>,
    /// 0 text, 1 image, 2 video, per token (transformers' `mm_token_type_ids`).
    pub mm_token_type_ids: Vec<u8>,
    /// (patches, C*T*P*P), all images concatenated; None for text-only input.
    pub pixel_values: Option<Tensor>,
    pub image_grid_thw: Vec<[usize; 3]>,
}

impl ModelInputs {
    /// The processor's output as decoder input on `device`.
    pub fn from_encoded(enc: &crate::processor::Encoded, device: &Device) -> Result<Self> {
        let pixel_values = if enc.image_grid_thw.is_empty() {
            None
        } else {
            let rows = enc.pixel_values.len() / enc.patch_dim.max(1);
            Some(Tensor::from_slice(
                &enc.pixel_values,
                (rows, enc.patch_dim),
                device,
            )?)
        };
        Ok(Self {
            input_ids: enc.input_ids.clone(),
            mm_token_type_ids: enc.mm_token_type_ids.clone(),
            pixel_values,
            image_grid_thw: enc.image_grid_thw.clone(),
        })
    }

    /// Text-only input.
    pub fn text(input_ids: Vec<u32>) -> Self {
        let n = input_ids.len();
        Self {
            input_ids,
            mm_token_type_ids: vec![rope::TOKEN_TEXT; n],
            pixel_values: None,
            image_grid_thw: Vec::new(),
        }
    }
}

/// Tells the forward pass whether to go on after an observed hidden state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// Sees each hidden state of one forward pass, shaped (batch, seq, hidden).
///
/// `index` follows transformers' `output_hidden_states`: 0 is the input embeddings with
/// image features placed; i (1 <= i < L) is the output of the i-th decoder layer of this
/// model *before* any DeepStack addition; L is the final output after the final norm.
/// `layer` is the original index of the decoder layer that produced the state (None for
/// the embeddings), which differs from `index - 1` in a pruned model.
pub trait LayerObserver: Send {
    fn observe(&mut self, index: usize, layer: Option<usize>, hidden: &Tensor) -> Result<Flow>;
}

/// Collects every hidden state; for tests and debugging (real consumers should reduce
/// on the fly instead of keeping them).
#[derive(Default)]
pub struct CollectHidden(pub Vec<Tensor>);

impl LayerObserver for CollectHidden {
    fn observe(&mut self, _index: usize, _layer: Option<usize>, hidden: &Tensor) -> Result<Flow> {
        self.0.push(hidden.clone());
        Ok(Flow::Continue)
    }
}

/// Watches one pass for NaN or infinity: one sum per hidden state (a finite tensor has a
/// finite sum; a NaN or inf anywhere makes it NaN or inf), all read back at once at the end,
/// so a GPU is not made to wait after every layer. Costs one read of each hidden state.
#[derive(Default)]
struct FiniteWatch {
    sums: Vec<Tensor>,
    /// (position in this checkpoint's layer list, original index); None for the embeddings.
    layers: Vec<Option<(usize, usize)>>,
}

impl FiniteWatch {
    fn see(&mut self, layer: Option<(usize, usize)>, h: &Tensor) -> Result<()> {
        // Detached: the sum must not keep a training graph's activations alive.
        let s = h.detach().sum_all()?.to_dtype(DType::F32)?;
        self.sums.push(s);
        self.layers.push(layer);
        Ok(())
    }

    /// Fails at the first hidden state that holds a NaN or an infinity.
    fn check(self, model: &str, names: &TensorNames) -> Result<()> {
        if self.sums.is_empty() {
            return Ok(());
        }
        let model = if model.is_empty() {
            String::new()
        } else {
            format!("{model}: ")
        };
        let sums = Tensor::stack(&self.sums, 0)?.to_vec1::<f32>()?;
        let Some(i) = sums.iter().position(|s| !s.is_finite()) else {
            return Ok(());
        };
        match self.layers[i] {
            None => bail!(
                "{model}NaN or infinite values in the input embeddings ({}, or the vision tower's image features): check the checkpoint's weights",
                names.embed_tokens()
            ),
            Some((pos, orig)) => {
                let original = if pos == orig {
                    String::new()
                } else {
                    format!(", layer {orig} of the unpruned model")
                };
                bail!(
                    "{model}NaN or infinite values first appear in the output of decoder layer {pos} ({}{pos}.*{original}): check the checkpoint's weights",
                    names.layers_prefix()
                )
            }
        }
    }
}

/// Decoder inputs after the vision tower ran and image features were placed.
pub struct Embedded {
    /// (1, seq, hidden)
    pub embeds: Tensor,
    /// Per DeepStack level, a (1, seq, hidden) tensor holding the level's features at the
    /// image positions and zeros elsewhere.
    pub deepstack: Vec<Tensor>,
    pub rope: RopeTables,
    /// Whether attention masks future positions (always, for a prompt).
    pub causal: bool,
    /// transformers' `rope_deltas`: text generated after the prompt continues at position
    /// (index in the sequence) + this.
    pub rope_delta: i64,
}

impl Embedded {
    /// Packs several conversations into one sequence (rows of every matrix product
    /// shared, attention kept within each conversation, each with its own positions), which
    /// computes exactly what running them one by one computes.
    pub fn pack(parts: Vec<Embedded>) -> Result<Embedded> {
        if parts.len() == 1 {
            return Ok(parts.into_iter().next().expect("one part"));
        }
        let Some(first) = parts.first() else {
            bail!("nothing to pack");
        };
        let levels = parts.iter().map(|p| p.deepstack.len()).max().unwrap_or(0);
        let segments: Vec<usize> = parts
            .iter()
            .map(|p| p.embeds.dim(1))
            .collect::<candle_core::Result<_>>()?;
        let (device, dtype) = (first.embeds.device().clone(), first.embeds.dtype());
        let hidden = first.embeds.dim(2)?;
        let embeds: Vec<&Tensor> = parts.iter().map(|p| &p.embeds).collect();
        let cos: Vec<&Tensor> = parts.iter().map(|p| &p.rope.cos).collect();
        let sin: Vec<&Tensor> = parts.iter().map(|p| &p.rope.sin).collect();
        let mut deepstack = Vec::with_capacity(levels);
        for level in 0..levels {
            // A conversation without images has no DeepStack features: zeros.
            let rows = parts
                .iter()
                .zip(&segments)
                .map(|(p, &len)| match p.deepstack.get(level) {
                    Some(t) => Ok(t.clone()),
                    None => Tensor::zeros((1, len, hidden), dtype, &device),
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            deepstack.push(Tensor::cat(&rows, 1)?);
        }
        Ok(Embedded {
            embeds: Tensor::cat(&embeds, 1)?,
            deepstack,
            rope: RopeTables {
                cos: Tensor::cat(&cos, 0)?,
                sin: Tensor::cat(&sin, 0)?,
                segments,
                batch_pad: Vec::new(),
            },
            causal: parts.iter().any(|p| p.causal),
            rope_delta: 0,
        })
    }
}

pub struct Model {
    pub config: ModelConfig,
    /// Where the checkpoint keeps each part.
    pub names: TensorNames,
    pub embed_tokens: Tensor,
    /// The vision tower; None for a text-only family.
    pub visual: Option<VisionTower>,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
    /// None when tied to the token embeddings.
    pub lm_head: Option<Linear>,
    rope: TextRope,
    device: Device,
    dtype: DType,
    /// The directory it was loaded from (empty when built in memory), for error messages.
    source: String,
}

/// Decoder layer indices present in the checkpoint's tensor names.
fn stored_layer_indices(infos: &[TensorInfo], names: &TensorNames) -> BTreeSet<usize> {
    infos
        .iter()
        .filter_map(|i| names.split_layer(&i.name).map(|(idx, _)| idx))
        .collect()
}

impl Model {
    /// Loads a Hugging Face checkpoint directory. `dtype` is the compute dtype (f32 on CPU).
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        Self::load_with_f32_layers(dir, dtype, device, &[])
    }

    /// [`Model::load`], with the decoder layers at `f32_layers` (positions in the
    /// checkpoint) read in f32 whatever `dtype` is: the exact starting values of the f32
    /// master weights of layers about to be trained in bf16.
    pub fn load_with_f32_layers(
        dir: &Path,
        dtype: DType,
        device: &Device,
        f32_layers: &[usize],
    ) -> Result<Self> {
        Self::load_inner(dir, dtype, device, f32_layers, None)
    }

    /// [`Model::load_with_f32_layers`] for fine-tuning the decoder layers at `trained`
    /// (positions in the checkpoint), everything else frozen: in f32 on a CPU with AVX-512
    /// every other linear weight (the vision tower, the frozen decoder layers, the token
    /// embeddings as the tied LM head) is stored as [`super::sgemm`]'s panels, as
    /// [`Model::load_for_inference`] stores them. The frozen layers' forward products then
    /// read them in place, and the gradient that flows through a frozen layer is computed
    /// from the same panels ([`super::sgemm::gemm_by_panels`]); no weight is held twice.
    pub fn load_for_finetune(
        dir: &Path,
        dtype: DType,
        device: &Device,
        trained: &[usize],
    ) -> Result<Self> {
        if dtype != DType::F32 || !device.is_cpu() || !super::sgemm::available() {
            return Self::load_with_f32_layers(dir, dtype, device, trained);
        }
        let infos = weights::read_tensor_infos(&weights::weight_files(dir)?)?;
        let names = TensorNames::detect(infos.iter().map(|i| i.name.as_str()));
        let trained = trained.to_vec();
        Self::load_laid_out(dir, dtype, device, move |name: &str| {
            names
                .split_layer(name)
                .is_none_or(|(i, _)| !trained.contains(&i))
        })
    }

    fn load_inner(
        dir: &Path,
        dtype: DType,
        device: &Device,
        f32_layers: &[usize],
        lay_out: Option<weights::LayOut>,
    ) -> Result<Self> {
        let config = ModelConfig::from_dir(dir)?;
        let (vb, tensors) = weights::var_builder_laid_out(dir, dtype, device, lay_out)?;
        let names = TensorNames::detect(tensors.iter().map(|i| i.name.as_str()));
        let stored = stored_layer_indices(&tensors, &names);
        let expected = config.text.num_hidden_layers;
        if stored.len() != expected
            || stored
                .iter()
                .next_back()
                .is_some_and(|&m| m + 1 != expected)
        {
            bail!(
                "{}: config.json says num_hidden_layers = {expected} but the weights hold {} decoder layers",
                dir.display(),
                stored.len()
            );
        }
        // Original indices of a pruned checkpoint come from its plan, when it has one.
        let original = read_original_indices(dir, expected)?;
        let vb_f32 = if f32_layers.is_empty() || dtype == DType::F32 {
            None
        } else {
            Some(weights::var_builder(dir, DType::F32, device)?.0)
        };
        Self::from_var_builder(
            config,
            names,
            vb,
            vb_f32.map(|v| (v, f32_layers)),
            &tensors,
            &original,
            device,
        )
        .with_context(|| format!("{}: weights do not match config.json", dir.display()))
        .map(|model| Self {
            source: dir.display().to_string(),
            ..model
        })
    }

    fn from_var_builder(
        config: ModelConfig,
        names: TensorNames,
        vb: VarBuilder<'static>,
        f32_layers: Option<(VarBuilder<'static>, &[usize])>,
        tensors: &[TensorInfo],
        original: &[usize],
        device: &Device,
    ) -> Result<Self> {
        let t = &config.text;
        let lm = vb.pp(&names.decoder);
        let layer_vb = |i: usize| match &f32_layers {
            Some((vb32, which)) if which.contains(&i) => {
                vb32.pp(&names.decoder).pp(format!("layers.{i}"))
            }
            _ => lm.pp(format!("layers.{i}")),
        };
        let embed_tokens = lm
            .pp("embed_tokens")
            .get((t.vocab_size, t.hidden_size), "weight")?;
        let visual = match &config.vision {
            Some(v) => Some(VisionTower::new(v, vb.pp(&names.visual))?),
            None => None,
        };
        let layers = (0..t.num_hidden_layers)
            .map(|i| DecoderLayer::new(t, layer_vb(i), original[i]))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(lm.pp("norm"), t.hidden_size, t.rms_norm_eps)?;
        let has_head = tensors.iter().any(|i| i.name == "lm_head.weight");
        let lm_head = if config.tie_word_embeddings {
            None
        } else if has_head {
            Some(Linear::new(
                vb.pp("lm_head"),
                t.hidden_size,
                t.vocab_size,
                false,
            )?)
        } else {
            bail!("lm_head.weight is missing and tie_word_embeddings is false");
        };
        let dtype = embed_tokens.dtype();
        let rope = TextRope::new(&config.text);
        Ok(Self {
            config,
            names,
            embed_tokens,
            visual,
            layers,
            norm,
            lm_head,
            rope,
            device: device.clone(),
            dtype,
            source: String::new(),
        })
    }

    /// [`Model::load`] for a model that only runs forward (no gradient ever flows
    /// through it): on the CPU every linear weight is laid out for the forward product
    /// (see [`Model::lay_out_for_forward`]); in f32 on a CPU with AVX-512 those with a
    /// multiple of 32 rows are stored as [`super::sgemm`]'s panels instead, a 3-D
    /// (rows/32, 32, cols) view of the same values that [`super::ops::linear`] multiplies by.
    pub fn load_for_inference(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        Self::load_laid_out(dir, dtype, device, |_| true)
    }

    /// [`Model::load`] with the linear weights whose checkpoint names pass `which` laid out
    /// for the forward product ([`Model::lay_out_for_forward`]), as they are read where
    /// possible (one pass over each weight's bytes, one allocation).
    pub fn load_laid_out(
        dir: &Path,
        dtype: DType,
        device: &Device,
        which: impl Fn(&str) -> bool + Clone + Send + Sync + 'static,
    ) -> Result<Self> {
        let mut model = Self::load_inner(dir, dtype, device, &[], Some(Box::new(which.clone())))?;
        // What was not laid out on reading (weights the model reshapes, like the vision
        // patch embedding, or conversions candle makes).
        model.lay_out_for_forward(which)?;
        Ok(model)
    }

    /// Stores the weights of the linear layers whose names pass `which` as the transpose of
    /// an (in, out)-contiguous matrix; on the CPU only (cuBLAS takes either layout as is).
    /// The tensor keeps torch's (out, in) shape and values, so nothing else changes, but
    /// `x @ w.T` now reads a row-major right operand, which the CPU matrix product (gemm)
    /// uses in place, where torch's layout made it repack the whole weight on every call
    /// and on each thread. The product of a gradient with the weight (`g @ w`) is what gets
    /// slower, so use it only for weights no gradient flows through.
    ///
    /// The token embeddings count as the tied LM head's weight.
    pub fn lay_out_for_forward(&mut self, which: impl Fn(&str) -> bool) -> Result<()> {
        if !self.device.is_cpu() {
            return Ok(());
        }
        for (name, t) in self.params_mut() {
            // Token embeddings are looked up by [`Model::embed_rows`], which takes
            // either layout; position embeddings are left alone.
            let linear = t.rank() == 2 && !name.ends_with("pos_embed.weight");
            if linear && which(&name) && t.is_contiguous() && !t.track_op() {
                *t = transposed_storage(t)?;
            }
        }
        Ok(())
    }

    /// The token embeddings of `ids` (n,) -> (n, hidden), in either layout of the table.
    fn embed_rows(&self, ids: &Tensor) -> Result<Tensor> {
        let e = &self.embed_tokens;
        Ok(if e.rank() == 3 {
            // Stored as the tied LM head's panels: row t is column t % 32 of panel t / 32.
            super::ops::panel_rows(e, ids)?
        } else if e.is_contiguous() {
            e.index_select(ids, 0)?
        } else {
            // Stored (hidden, vocab)-contiguous by `lay_out_for_forward`: gather columns.
            e.t()?.index_select(ids, 1)?.t()?.contiguous()?
        })
    }

    /// `f()` where this model's CPU work runs fastest: on a thread of rayon's pool (see
    /// [`crate::workers::on_pool`]) for a model on the CPU, here on a GPU.
    fn pooled<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        if self.device().is_cpu() {
            crate::workers::on_pool(f)
        } else {
            f()
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Every tensor of the model with its checkpoint name (the tied LM head appears once,
    /// as the token embeddings). The vision patch embedding is the 2-D matrix the model
    /// computes with; [`Model::stored_shape`] maps it back to the Conv3d layout.
    pub fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let names = &self.names;
        let mut out = vec![(names.embed_tokens(), &mut self.embed_tokens)];
        if let Some(visual) = self.visual.as_mut() {
            for (name, t) in visual.params_mut() {
                out.push((format!("{}{name}", names.visual_prefix()), t));
            }
        }
        let layers = names.layers_prefix();
        for (i, layer) in self.layers.iter_mut().enumerate() {
            for (name, t) in layer.params_mut() {
                out.push((format!("{layers}{i}.{name}"), t));
            }
        }
        out.push((names.norm(), &mut self.norm.weight));
        if let Some(head) = self.lm_head.as_mut() {
            out.push(("lm_head.weight".to_string(), &mut head.weight));
        }
        out
    }

    /// The shape tensor `name` has in a checkpoint, given its shape in the model.
    pub fn stored_shape(&self, name: &str, shape: &[usize]) -> Vec<usize> {
        match &self.visual {
            Some(v) if name == format!("{}patch_embed.proj.weight", self.names.visual_prefix()) => {
                v.patch_weight_shape()
            }
            _ => shape.to_vec(),
        }
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Declares the dtype activations are computed in, for a trainer that has just replaced
    /// every tensor by one of that dtype (f32 master weights cast to bf16).
    pub fn set_compute_dtype(&mut self, dtype: DType) {
        self.dtype = dtype;
    }

    /// Runs the vision tower on the inputs' images.
    pub fn image_features(
        &self,
        pixel_values: &Tensor,
        grid_thw: &[[usize; 3]],
        grad: Grad,
    ) -> Result<VisionOutput> {
        match &self.visual {
            Some(v) => v.forward(pixel_values, grid_thw, grad),
            None => bail!(
                "{} model has no vision tower: it takes text only",
                self.config.model_type
            ),
        }
    }

    /// Token embeddings with image features placed, DeepStack features, rotary tables, mask.
    pub fn embed(&self, inputs: &ModelInputs, grad: Grad) -> Result<Embedded> {
        self.pooled(|| self.embed_here(inputs, grad))
    }

    /// [`Model::embed`] on the calling thread.
    fn embed_here(&self, inputs: &ModelInputs, grad: Grad) -> Result<Embedded> {
        let seq = inputs.input_ids.len();
        if seq == 0 {
            bail!("empty input");
        }
        if inputs.mm_token_type_ids.len() != seq {
            bail!(
                "mm_token_type_ids has {} entries for {seq} tokens",
                inputs.mm_token_type_ids.len()
            );
        }
        let vocab = self.config.text.vocab_size;
        if let Some(&bad) = inputs.input_ids.iter().find(|&&id| id as usize >= vocab) {
            bail!("token id {bad} is outside the vocabulary ({vocab} entries)");
        }
        let ids = Tensor::new(inputs.input_ids.as_slice(), &self.device)?;
        let mut embeds = self.embed_rows(&ids)?; // (seq, hidden)
        let image_pos: Vec<u32> = inputs
            .input_ids
            .iter()
            .enumerate()
            .filter(|(_, &id)| id == self.config.image_token_id)
            .map(|(i, _)| i as u32)
            .collect();
        let mut deepstack = Vec::new();
        match &inputs.pixel_values {
            Some(pv) => {
                let out = self.image_features(pv, &inputs.image_grid_thw, grad)?;
                let n_feat = out.image_embeds.dim(0)?;
                if n_feat != image_pos.len() {
                    bail!(
                        "image features and image tokens do not match: {} image tokens, {n_feat} features",
                        image_pos.len()
                    );
                }
                let pos = Tensor::new(image_pos.as_slice(), &self.device)?;
                let scatter = |feat: &Tensor| -> Result<Tensor> {
                    let zeros = Tensor::zeros((seq, feat.dim(1)?), feat.dtype(), &self.device)?;
                    Ok(zeros.index_add(&pos, feat, 0)?)
                };
                let mask: Vec<u8> = inputs
                    .input_ids
                    .iter()
                    .map(|&id| u8::from(id == self.config.image_token_id))
                    .collect();
                let mask =
                    Tensor::from_vec(mask, (seq, 1), &self.device)?.broadcast_as(embeds.shape())?;
                embeds = mask.where_cond(&scatter(&out.image_embeds)?, &embeds)?;
                for level in &out.deepstack {
                    deepstack.push(scatter(level)?.unsqueeze(0)?);
                }
            }
            None => {
                if !image_pos.is_empty() {
                    bail!("input has {} image tokens but no images", image_pos.len());
                }
            }
        }
        let index = match &self.config.vision {
            Some(v) => rope::get_rope_index(
                &inputs.mm_token_type_ids,
                &inputs.image_grid_thw,
                v.spatial_merge_size(),
            )?,
            None => {
                let n: Vec<i64> = (0..seq as i64).collect();
                rope::RopeIndex {
                    positions: [n.clone(), n.clone(), n],
                    delta: 0,
                }
            }
        };
        let (cos, sin) = self.rope.cos_sin(&index.positions, &self.device)?;
        Ok(Embedded {
            embeds: embeds.unsqueeze(0)?,
            deepstack,
            rope: RopeTables {
                cos: cos.to_dtype(self.dtype)?,
                sin: sin.to_dtype(self.dtype)?,
                segments: Vec::new(),
                batch_pad: Vec::new(),
            },
            causal: seq > 1,
            rope_delta: index.delta,
        })
    }

    /// Runs the decoder; returns the final normed hidden state (1, seq, hidden), or None
    /// when the observer stopped the pass.
    pub fn run_decoder(
        &self,
        emb: &Embedded,
        observer: Option<&mut dyn LayerObserver>,
        grad: Grad,
    ) -> Result<Option<Tensor>> {
        self.pooled(|| self.run_decoder_here(emb, observer, grad))
    }

    /// [`Model::run_decoder`] on the calling thread.
    fn run_decoder_here(
        &self,
        emb: &Embedded,
        mut observer: Option<&mut dyn LayerObserver>,
        grad: Grad,
    ) -> Result<Option<Tensor>> {
        let mut h = emb.embeds.clone();
        let mut watch = FiniteWatch::default();
        watch.see(None, &h)?;
        if let Some(obs) = observer.as_deref_mut() {
            if obs.observe(0, None, &h)? == Flow::Stop {
                watch.check(&self.source, &self.names)?;
                return Ok(None);
            }
        }
        let n = self.layers.len();
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h, &emb.rope, emb.causal, grad)?;
            watch.see(Some((i, layer.original_index)), &h)?;
            if i + 1 < n {
                if let Some(obs) = observer.as_deref_mut() {
                    if obs.observe(i + 1, Some(layer.original_index), &h)? == Flow::Stop {
                        watch.check(&self.source, &self.names)?;
                        return Ok(None);
                    }
                }
            }
            // DeepStack features go into the first layers of *this* stack.
            if let Some(ds) = emb.deepstack.get(i) {
                h = (h + ds)?;
            }
        }
        watch.check(&self.source, &self.names)?;
        let h = self.norm.forward(&h, grad)?;
        if let Some(obs) = observer {
            let last = self.layers.last().map(|l| l.original_index);
            obs.observe(n, last, &h)?;
        }
        Ok(Some(h))
    }

    /// Runs positions `range` of a decoder stack on `h`: `stack` lists, in order, the
    /// indices (into `self.layers`) of the layers that make up the stack, e.g. the kept
    /// layers of a pruning candidate. As in a pruned checkpoint, DeepStack features go into
    /// the first layers of the stack.
    pub fn run_stack(
        &self,
        emb: &Embedded,
        stack: &[usize],
        h: Tensor,
        range: std::ops::Range<usize>,
        grad: Grad,
    ) -> Result<Tensor> {
        self.pooled(|| self.run_stack_here(emb, stack, h, range, grad))
    }

    /// [`Model::run_stack`] on the calling thread.
    fn run_stack_here(
        &self,
        emb: &Embedded,
        stack: &[usize],
        mut h: Tensor,
        range: std::ops::Range<usize>,
        grad: Grad,
    ) -> Result<Tensor> {
        let mut watch = FiniteWatch::default();
        if range.start == 0 {
            watch.see(None, &h)?;
        }
        for pos in range {
            let (i, layer) = stack
                .get(pos)
                .and_then(|&i| Some((i, self.layers.get(i)?)))
                .context("decoder stack position out of range")?;
            h = layer.forward(&h, &emb.rope, emb.causal, grad)?;
            watch.see(Some((i, layer.original_index)), &h)?;
            if let Some(ds) = emb.deepstack.get(pos) {
                h = (h + ds)?;
            }
        }
        watch.check(&self.source, &self.names)?;
        Ok(h)
    }

    /// Whether every decoder layer at stack positions `range` runs its training pass as
    /// one node on input like `x` (`train_layer::applies`: the CPU in f32).
    pub(crate) fn layers_run_as_nodes(
        &self,
        emb: &Embedded,
        stack: &[usize],
        range: std::ops::Range<usize>,
        x: &Tensor,
    ) -> bool {
        range.into_iter().all(|pos| {
            stack
                .get(pos)
                .and_then(|&i| self.layers.get(i))
                .is_some_and(|l| super::train_layer::applies(l, x, &emb.rope, Grad::Track, false))
        })
    }

    /// The decoder layer at stack position `pos` on `x`, kept for its backward pass
    /// outside the autograd graph (`train_layer::forward_pending`): its output (with the
    /// DeepStack features added after it, as [`Model::run_stack`] does) unless `output` is
    /// false. `Ok(None)` where the layer does not run as one node.
    pub(crate) fn layer_pending(
        &self,
        emb: &Embedded,
        stack: &[usize],
        pos: usize,
        x: &Tensor,
        need_dx: bool,
        output: bool,
    ) -> Result<Option<(Option<Tensor>, super::train_layer::Pending)>> {
        let (i, layer) = stack
            .get(pos)
            .and_then(|&i| Some((i, self.layers.get(i)?)))
            .context("decoder stack position out of range")?;
        let run = || -> Result<_> {
            let Some((y, pending)) = super::train_layer::forward_pending(
                layer, x, &emb.rope, emb.causal, need_dx, output,
            )?
            else {
                return Ok(None);
            };
            let y = match y {
                Some(mut y) => {
                    let mut watch = FiniteWatch::default();
                    watch.see(Some((i, layer.original_index)), &y)?;
                    watch.check(&self.source, &self.names)?;
                    if let Some(ds) = emb.deepstack.get(pos) {
                        y = (y + ds)?;
                    }
                    Some(y)
                }
                None => None,
            };
            Ok(Some((y, pending)))
        };
        self.pooled(run)
    }

    /// The summed cross-entropy of the logits at `positions` of (1, seq, hidden) decoder
    /// output against `labels`, the LM head and the loss one node of the training graph
    /// (`loss::head_cross_entropy_sum`); `Ok(None)`, nothing done, unless the LM head is
    /// stored as panels (a model loaded for fine-tuning on a CPU with AVX-512).
    pub fn head_loss(
        &self,
        hidden: &Tensor,
        positions: &[u32],
        labels: &[u32],
    ) -> Result<Option<Tensor>> {
        let w = match &self.lm_head {
            Some(l) => &l.weight,
            None => &self.embed_tokens,
        };
        if super::ops::PanelWeight::of(w).is_none() {
            return Ok(None);
        }
        self.pooled(|| {
            let rows = self.normed_rows_at(hidden, positions, Grad::Track)?;
            super::loss::head_cross_entropy_sum(&rows, w, labels)
        })
    }

    /// Final norm and LM head at the given positions of (1, seq, hidden) decoder output:
    /// (positions, vocab) logits, never the vocabulary-sized logits of every position.
    pub fn logits_at(&self, hidden: &Tensor, positions: &[u32], grad: Grad) -> Result<Tensor> {
        self.pooled(|| self.logits_at_here(hidden, positions, grad))
    }

    /// [`Model::logits_at`] on the calling thread.
    fn logits_at_here(&self, hidden: &Tensor, positions: &[u32], grad: Grad) -> Result<Tensor> {
        self.logits(&self.normed_rows_at(hidden, positions, grad)?)
    }

    /// The final norm of the rows at `positions` of (1, seq, hidden) decoder output.
    fn normed_rows_at(&self, hidden: &Tensor, positions: &[u32], grad: Grad) -> Result<Tensor> {
        let pos = Tensor::new(positions, hidden.device())?;
        let rows = hidden.squeeze(0)?.index_select(&pos, 0)?;
        Ok(self.norm.forward(&rows, grad)?)
    }

    /// Prefill for generation: runs the whole prompt, filling `cache` (one slot per layer),
    /// and returns the logits (vocab) of the last position.
    pub fn prefill(&self, emb: &Embedded, cache: &mut Vec<KvSlot>) -> Result<Tensor> {
        self.pooled(|| self.prefill_here(emb, cache))
    }

    /// [`Model::prefill`] on the calling thread.
    fn prefill_here(&self, emb: &Embedded, cache: &mut Vec<KvSlot>) -> Result<Tensor> {
        let h = self.run_filling_cache(emb, cache)?;
        let last = h.dim(1)? - 1;
        Ok(self.logits_at(&h, &[last as u32], Grad::None)?.squeeze(0)?)
    }

    /// Every decoder layer over `emb`, each appending its keys and values to its slot of a
    /// fresh `cache`; returns the last layer's output (before the final norm).
    fn run_filling_cache(&self, emb: &Embedded, cache: &mut Vec<KvSlot>) -> Result<Tensor> {
        cache.clear();
        cache.resize(self.layers.len(), None);
        let mut h = emb.embeds.clone();
        let mut watch = FiniteWatch::default();
        watch.see(None, &h)?;
        for (i, (layer, slot)) in self.layers.iter().zip(cache.iter_mut()).enumerate() {
            h = layer.forward_with_cache(&h, &emb.rope, emb.causal, Grad::None, Some(slot))?;
            watch.see(Some((i, layer.original_index)), &h)?;
            if let Some(ds) = emb.deepstack.get(i) {
                h = (h + ds)?;
            }
        }
        watch.check(&self.source, &self.names)?;
        Ok(h)
    }

    /// One decoding step: `token` at text position `position` (the same on all three
    /// M-RoPE axes, as transformers continues after the prompt: cache position + rope
    /// delta), attending over `cache`. Returns the logits (vocab).
    pub fn decode_step(&self, token: u32, position: i64, cache: &mut [KvSlot]) -> Result<Tensor> {
        self.pooled(|| self.decode_step_here(token, position, cache))
    }

    /// [`Model::decode_step`] on the calling thread.
    fn decode_step_here(&self, token: u32, position: i64, cache: &mut [KvSlot]) -> Result<Tensor> {
        // A batch of one without padding.
        Ok(self
            .decode_batch(&[token], &[position], cache, &[0])?
            .squeeze(0)?)
    }

    /// Prefill of several prompts at once, for batched generation: the prompts run packed
    /// into one sequence (attention kept within each), then each layer's cached keys and
    /// values are laid out left-padded, (batch, longest prompt, kv_heads, head_dim), for
    /// [`Model::decode_batch`]. Returns the logits (batch, vocab) of each prompt's
    /// last position and each prompt's left padding.
    pub fn prefill_batch(
        &self,
        prompts: Vec<Embedded>,
        cache: &mut Vec<KvSlot>,
    ) -> Result<(Tensor, Vec<usize>)> {
        self.pooled(|| self.prefill_batch_here(prompts, cache))
    }

    /// [`Model::prefill_batch`] on the calling thread.
    fn prefill_batch_here(
        &self,
        prompts: Vec<Embedded>,
        cache: &mut Vec<KvSlot>,
    ) -> Result<(Tensor, Vec<usize>)> {
        let lens = prompts
            .iter()
            .map(|e| e.embeds.dim(1))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let longest = lens.iter().copied().max().context("no prompts")?;
        let h = self.run_filling_cache(&Embedded::pack(prompts)?, cache)?;
        for slot in cache.iter_mut() {
            if let Some((k, v)) = slot.take() {
                *slot = Some((
                    left_padded(&k, &lens, longest)?,
                    left_padded(&v, &lens, longest)?,
                ));
            }
        }
        let mut end = 0;
        let last: Vec<u32> = lens
            .iter()
            .map(|&l| {
                end += l;
                (end - 1) as u32
            })
            .collect();
        let logits = self.logits_at(&h, &last, Grad::None)?;
        Ok((logits, lens.iter().map(|&l| longest - l).collect()))
    }

    /// One decoding step of a batch: `tokens[b]` at text position `positions[b]`, attending
    /// over the left-padded `cache` of [`Model::prefill_batch`] (whose first
    /// `left_pad[b]` positions of entry b are padding). Returns the logits (batch, vocab).
    pub fn decode_batch(
        &self,
        tokens: &[u32],
        positions: &[i64],
        cache: &mut [KvSlot],
        left_pad: &[usize],
    ) -> Result<Tensor> {
        self.pooled(|| self.decode_batch_here(tokens, positions, cache, left_pad))
    }

    /// [`Model::decode_batch`] on the calling thread.
    fn decode_batch_here(
        &self,
        tokens: &[u32],
        positions: &[i64],
        cache: &mut [KvSlot],
        left_pad: &[usize],
    ) -> Result<Tensor> {
        let b = tokens.len();
        if positions.len() != b || left_pad.len() != b {
            bail!(
                "decode_batch: {b} tokens, {} positions, {} paddings",
                positions.len(),
                left_pad.len()
            );
        }
        let pos = positions.to_vec();
        let (cos, sin) = self
            .rope
            .cos_sin(&[pos.clone(), pos.clone(), pos], &self.device)?;
        let tables = RopeTables {
            cos: cos.to_dtype(self.dtype)?,
            sin: sin.to_dtype(self.dtype)?,
            segments: Vec::new(),
            batch_pad: left_pad.to_vec(),
        };
        let ids = Tensor::new(tokens, &self.device)?;
        let mut h = self.embed_rows(&ids)?.unsqueeze(1)?; // (b, 1, hidden)
        for (layer, slot) in self.layers.iter().zip(cache.iter_mut()) {
            h = layer.forward_with_cache(&h, &tables, true, Grad::None, Some(slot))?;
        }
        // The prefill checked every layer; here one sum per step (the caller reads the
        // logits back every step anyway).
        let total = h.sum_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        if !total.is_finite() {
            bail!(
                "{}NaN or infinite values in the last decoder layer's output while decoding position {}: the cached keys and values overflowed, or the weights hold NaN",
                if self.source.is_empty() { String::new() } else { format!("{}: ", self.source) },
                positions[0]
            );
        }
        let h = self.norm.forward(&h.squeeze(1)?, Grad::None)?;
        self.logits(&h)
    }

    /// LM head on (…, hidden) hidden states.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let w = match &self.lm_head {
            Some(l) => &l.weight,
            None => &self.embed_tokens,
        };
        Ok(super::ops::linear(hidden, w, None)?)
    }

    /// Full forward pass: logits (seq, vocab).
    pub fn forward(
        &self,
        inputs: &ModelInputs,
        observer: Option<&mut dyn LayerObserver>,
    ) -> Result<Tensor> {
        self.pooled(|| self.forward_here(inputs, observer))
    }

    /// [`Model::forward`] on the calling thread.
    fn forward_here(
        &self,
        inputs: &ModelInputs,
        observer: Option<&mut dyn LayerObserver>,
    ) -> Result<Tensor> {
        let emb = self.embed(inputs, Grad::None)?;
        let h = self
            .run_decoder(&emb, observer, Grad::None)?
            .context("the observer stopped the pass; no logits")?;
        self.logits(&h.squeeze(0)?)
    }
}

/// `t` (rows, cols), contiguous on the CPU, as the transpose of a (cols, rows)-contiguous
/// copy: same shape and values, the other memory layout.
fn transposed_storage(t: &Tensor) -> Result<Tensor> {
    use super::fastmath::transpose;
    use candle_core::CpuStorage as S;
    let (rows, cols) = t.dims2()?;
    let (storage, layout) = t.storage_and_layout();
    let (candle_core::Storage::Cpu(cpu), Some((o1, o2))) = (&*storage, layout.contiguous_offsets())
    else {
        bail!("transposed_storage: a contiguous CPU tensor");
    };
    let dev = t.device();
    let out = match cpu {
        S::F32(v) => Tensor::from_vec(transpose(&v[o1..o2], rows, cols), (cols, rows), dev)?,
        S::BF16(v) => Tensor::from_vec(transpose(&v[o1..o2], rows, cols), (cols, rows), dev)?,
        S::F16(v) => Tensor::from_vec(transpose(&v[o1..o2], rows, cols), (cols, rows), dev)?,
        _ => t.t()?.contiguous()?,
    };
    Ok(out.t()?)
}

/// Packed (1, total, kv_heads, head_dim) keys or values of prompts of lengths `lens` as a
/// left-padded (batch, longest, kv_heads, head_dim) tensor (zeros in the padding).
fn left_padded(packed: &Tensor, lens: &[usize], longest: usize) -> Result<Tensor> {
    let (_, _, kv, hd) = packed.dims4()?;
    let mut rows = Vec::with_capacity(lens.len());
    let mut start = 0;
    for &len in lens {
        let part = packed.narrow(1, start, len)?;
        start += len;
        rows.push(if len < longest {
            let pad = Tensor::zeros((1, longest - len, kv, hd), packed.dtype(), packed.device())?;
            Tensor::cat(&[&pad, &part], 1)?
        } else {
            part
        });
    }
    Ok(Tensor::cat(&rows, 0)?)
}

/// The original index of every decoder layer of the checkpoint in `dir`, without loading
/// it (config.json and `interlace_plan.json`).
pub fn original_layer_indices(dir: &Path) -> Result<Vec<usize>> {
    let config = ModelConfig::from_dir(dir)?;
    read_original_indices(dir, config.text.num_hidden_layers)
}

/// Original layer indices: from `interlace_plan.json`'s `kept` when present (a pruned
/// checkpoint), else 0..n.
fn read_original_indices(dir: &Path, n: usize) -> Result<Vec<usize>> {
    let path = dir.join("interlace_plan.json");
    if !path.exists() {
        return Ok((0..n).collect());
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let kept: Vec<usize> = json
        .get("kept")
        .and_then(|k| k.as_array())
        .with_context(|| format!("{}: missing list `kept`", path.display()))?
        .iter()
        .map(|v| v.as_u64().map(|x| x as usize))
        .collect::<Option<_>>()
        .with_context(|| format!("{}: `kept` must list layer indices", path.display()))?;
    if kept.len() != n {
        bail!(
            "{}: `kept` lists {} layers but the model has {n}",
            path.display(),
            kept.len()
        );
    }
    Ok(kept)
}
