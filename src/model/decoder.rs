//! The decoder layer every family shares: GQA attention (optional q/k RMSNorm as in Qwen3
//! and Qwen3-VL, optional biases as in Qwen2 and Llama) with the rotary tables of
//! [`crate::model::rope`], a SwiGLU MLP, pre-norm residuals. Weight names mirror
//! `<decoder>.layers.{i}.*`.
//! Every layer keeps its original index so that a pruned model still speaks in the
//! original model's layer numbers.

use anyhow::Result;
use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::model::config::TextConfig;
use crate::model::layers::{Linear, RmsNorm};
use crate::model::ops::{self, Grad};

#[derive(Debug, Clone)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    /// Qwen3 and Qwen3-VL normalise each head of q and k; the others have no such norm.
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    pub(crate) num_heads: usize,
    pub(crate) num_kv_heads: usize,
    pub(crate) head_dim: usize,
}

#[derive(Debug, Clone)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
    pub(crate) act: candle_nn::Activation,
}

#[derive(Debug, Clone)]
pub struct DecoderLayer {
    /// Index of this layer in the original (unpruned) model.
    pub original_index: usize,
    pub self_attn: Attention,
    pub mlp: Mlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

impl DecoderLayer {
    pub fn new(cfg: &TextConfig, vb: VarBuilder, original_index: usize) -> Result<Self> {
        let h = cfg.hidden_size;
        let hd = cfg.head_dim;
        let (nh, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let a = vb.pp("self_attn");
        let bias = cfg.qkv_bias;
        let qk_norm = |name: &str| -> Result<Option<RmsNorm>> {
            Ok(if cfg.qk_norm {
                Some(RmsNorm::new(a.pp(name), hd, cfg.rms_norm_eps)?)
            } else {
                None
            })
        };
        let self_attn = Attention {
            q_proj: Linear::new(a.pp("q_proj"), h, nh * hd, bias)?,
            k_proj: Linear::new(a.pp("k_proj"), h, nkv * hd, bias)?,
            v_proj: Linear::new(a.pp("v_proj"), h, nkv * hd, bias)?,
            o_proj: Linear::new(a.pp("o_proj"), nh * hd, h, cfg.o_bias)?,
            q_norm: qk_norm("q_norm")?,
            k_norm: qk_norm("k_norm")?,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: hd,
        };
        let m = vb.pp("mlp");
        let mlp = Mlp {
            gate_proj: Linear::new(m.pp("gate_proj"), h, cfg.intermediate_size, cfg.mlp_bias)?,
            up_proj: Linear::new(m.pp("up_proj"), h, cfg.intermediate_size, cfg.mlp_bias)?,
            down_proj: Linear::new(m.pp("down_proj"), cfg.intermediate_size, h, cfg.mlp_bias)?,
            act: cfg.hidden_act,
        };
        Ok(Self {
            original_index,
            self_attn,
            mlp,
            input_layernorm: RmsNorm::new(vb.pp("input_layernorm"), h, cfg.rms_norm_eps)?,
            post_attention_layernorm: RmsNorm::new(
                vb.pp("post_attention_layernorm"),
                h,
                cfg.rms_norm_eps,
            )?,
        })
    }

    /// Every weight of the layer with its name relative to the layer
    /// (`self_attn.q_proj.weight`, ...), for the trainer to swap in trainable copies.
    pub fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut out = Vec::new();
        let a = &mut self.self_attn;
        for (name, lin) in [
            ("self_attn.q_proj", &mut a.q_proj),
            ("self_attn.k_proj", &mut a.k_proj),
            ("self_attn.v_proj", &mut a.v_proj),
            ("self_attn.o_proj", &mut a.o_proj),
            ("mlp.gate_proj", &mut self.mlp.gate_proj),
            ("mlp.up_proj", &mut self.mlp.up_proj),
            ("mlp.down_proj", &mut self.mlp.down_proj),
        ] {
            out.push((format!("{name}.weight"), &mut lin.weight));
            if let Some(b) = lin.bias.as_mut() {
                out.push((format!("{name}.bias"), b));
            }
        }
        for (name, norm) in [
            ("self_attn.q_norm", a.q_norm.as_mut()),
            ("self_attn.k_norm", a.k_norm.as_mut()),
            ("input_layernorm", Some(&mut self.input_layernorm)),
            (
                "post_attention_layernorm",
                Some(&mut self.post_attention_layernorm),
            ),
        ] {
            if let Some(norm) = norm {
                out.push((format!("{name}.weight"), &mut norm.weight));
            }
        }
        out
    }

    /// `x`: (batch, seq, hidden); `causal`: mask future positions.
    pub fn forward(
        &self,
        x: &Tensor,
        rope: &RopeTables,
        causal: bool,
        grad: Grad,
    ) -> Result<Tensor> {
        self.forward_with_cache(x, rope, causal, grad, None)
    }

    /// Like [`DecoderLayer::forward`], appending this pass's keys and values to `cache` and
    /// attending over everything cached (generation). `rope` covers the new positions only.
    pub fn forward_with_cache(
        &self,
        x: &Tensor,
        rope: &RopeTables,
        causal: bool,
        grad: Grad,
        cache: Option<&mut KvSlot>,
    ) -> Result<Tensor> {
        if super::train_layer::applies(self, x, rope, grad, cache.is_some()) {
            return Ok(super::train_layer::forward(self, x, rope, causal)?);
        }
        self.forward_composed(x, rope, causal, grad, cache)
    }

    /// [`DecoderLayer::forward_with_cache`] as a composition of the ops in
    /// [`crate::model::ops`] (every case but training in f32 on the CPU, see
    /// [`super::train_layer`]).
    pub(crate) fn forward_composed(
        &self,
        x: &Tensor,
        rope: &RopeTables,
        causal: bool,
        grad: Grad,
        cache: Option<&mut KvSlot>,
    ) -> Result<Tensor> {
        let h = self.input_layernorm.forward(x, grad)?;
        let h = self.self_attn.forward(&h, rope, causal, grad, cache)?;
        let x = (x + h)?;
        let h = self.post_attention_layernorm.forward(&x, grad)?;
        let h = self.mlp.forward(&h)?;
        Ok((x + h)?)
    }
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [g, u] = Linear::forward_many(x, [&self.gate_proj, &self.up_proj])?;
        let h = if self.act == candle_nn::Activation::Silu {
            ops::swiglu(&g, &u)?
        } else {
            (g.apply(&self.act)? * u)?
        };
        Ok(self.down_proj.forward(&h)?)
    }
}

/// One layer's cached keys and values, (batch, seq, kv_heads, head_dim) each, after
/// q/k-norm and rotary embedding.
pub type KvSlot = Option<(Tensor, Tensor)>;

/// cos/sin of shape (seq, head_dim), shared by every layer of one forward pass.
#[derive(Debug, Clone)]
pub struct RopeTables {
    pub cos: Tensor,
    pub sin: Tensor,
    /// For several conversations packed into one sequence: their lengths, in order.
    /// Attention stays within each (empty: one conversation).
    pub segments: Vec<usize>,
    /// For a batch of sequences decoded side by side (batch > 1, one new position each,
    /// the cache laid out left-padded): how many cached positions at the start of each
    /// entry are padding. The cos/sin rows are then one per batch entry. Empty otherwise.
    pub batch_pad: Vec<usize>,
}

impl Attention {
    fn forward(
        &self,
        x: &Tensor,
        rope: &RopeTables,
        causal: bool,
        grad: Grad,
        cache: Option<&mut KvSlot>,
    ) -> Result<Tensor> {
        let (b, seq, _) = x.dims3()?;
        let hd = self.head_dim;
        let [q, k, v] = Linear::forward_many(x, [&self.q_proj, &self.k_proj, &self.v_proj])?;
        let q = q.reshape((b, seq, self.num_heads, hd))?;
        let k = k.reshape((b, seq, self.num_kv_heads, hd))?;
        let v = v.reshape((b, seq, self.num_kv_heads, hd))?;
        let rotate = |t: &Tensor, heads: usize| -> Result<Tensor> {
            if rope.batch_pad.is_empty() {
                return Ok(ops::apply_rope(t, &rope.cos, &rope.sin, grad)?);
            }
            // One rotary row per batch entry: rotate the batch as if it were one sequence.
            let flat = t.reshape((1, b * seq, heads, hd))?;
            Ok(ops::apply_rope(&flat, &rope.cos, &rope.sin, grad)?.reshape((b, seq, heads, hd))?)
        };
        let norm = |n: &Option<RmsNorm>, t: Tensor| -> Result<Tensor> {
            Ok(match n {
                Some(n) => n.forward(&t, grad)?,
                None => t,
            })
        };
        let q = rotate(&norm(&self.q_norm, q)?, self.num_heads)?;
        let k = rotate(&norm(&self.k_norm, k)?, self.num_kv_heads)?;
        let (k, v) = match cache {
            Some(slot) => {
                let kv = match slot.take() {
                    Some((ck, cv)) => (Tensor::cat(&[&ck, &k], 1)?, Tensor::cat(&[&cv, &v], 1)?),
                    None => (k, v),
                };
                *slot = Some(kv.clone());
                kv
            }
            None => (k, v),
        };
        let out = if !rope.batch_pad.is_empty() {
            ops::attention_padded(&q, &k, &v, causal, &rope.batch_pad, grad)?
        } else if rope.segments.len() > 1 {
            let mut parts = Vec::with_capacity(rope.segments.len());
            let mut start = 0;
            for &len in &rope.segments {
                let part = |t: &Tensor| t.narrow(1, start, len);
                parts.push(ops::attention(
                    &part(&q)?,
                    &part(&k)?,
                    &part(&v)?,
                    causal,
                    grad,
                )?);
                start += len;
            }
            Tensor::cat(&parts, 1)?
        } else {
            ops::attention(&q, &k, &v, causal, grad)?
        };
        Ok(self.o_proj.forward(&out)?)
    }
}
