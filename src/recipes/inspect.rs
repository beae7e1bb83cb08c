//! `interlace inspect`: what a checkpoint is, read from its config and tensor headers only.

use std::path::Path;

use anyhow::Result;

use crate::model::config::{Family, ModelConfig, RopeScaling, VisionSpec};
use crate::model::dir::TensorNames;
use crate::model::weights;
use crate::processor::image::ImageProcessorConfig;

/// Parameter counts by part of the model.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ParamCounts {
    pub vision: usize,
    pub language: usize,
    pub head: usize,
    pub other: usize,
}

impl ParamCounts {
    pub fn total(&self) -> usize {
        self.vision + self.language + self.head + self.other
    }
}

pub fn count_params(infos: &[weights::TensorInfo]) -> ParamCounts {
    let names = TensorNames::detect(infos.iter().map(|i| i.name.as_str()));
    let (visual, decoder) = (names.visual_prefix(), format!("{}.", names.decoder));
    let mut c = ParamCounts::default();
    for i in infos {
        let n = i.numel();
        if i.name.starts_with(&visual) {
            c.vision += n;
        } else if i.name.starts_with(&decoder) {
            c.language += n;
        } else if i.name.starts_with("lm_head.") {
            c.head += n;
        } else {
            c.other += n;
        }
    }
    c
}

fn human(n: usize) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2} M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

/// A multi-line human-readable description of the checkpoint in `dir`.
pub fn describe(dir: &Path) -> Result<String> {
    let cfg = ModelConfig::from_dir(dir)?;
    let files = weights::weight_files(dir)?;
    let infos = weights::read_tensor_infos(&files)?;
    let counts = count_params(&infos);
    let t = &cfg.text;
    let mut s = String::new();
    let mut line = |k: &str, val: String| s.push_str(&format!("{k:<22} {val}\n"));
    line("model", dir.display().to_string());
    line(
        "architecture",
        format!(
            "{} ({})",
            cfg.model_type,
            match cfg.family {
                Family::Qwen3Vl => "Qwen3-VL dense",
                Family::Qwen2Vl => "Qwen2-VL",
                Family::Qwen25Vl => "Qwen2.5-VL",
                Family::Qwen3 => "Qwen3, text only",
                Family::Llama => "Llama, text only",
            }
        ),
    );
    line("decoder layers", t.num_hidden_layers.to_string());
    line(
        "text",
        format!(
            "hidden {}, heads {} (kv {}), head_dim {}, mlp {}, vocab {}",
            t.hidden_size,
            t.num_attention_heads,
            t.num_key_value_heads,
            t.head_dim,
            t.intermediate_size,
            t.vocab_size
        ),
    );
    let scaling = match &t.rope_scaling {
        RopeScaling::None => String::new(),
        RopeScaling::Linear { factor } => format!(", linear scaling x{factor}"),
        RopeScaling::Llama3 {
            factor,
            original_max_position_embeddings,
            ..
        } => format!(", llama3 scaling x{factor} from {original_max_position_embeddings}"),
    };
    let axes = match (t.mrope_section.is_empty(), t.mrope_interleaved) {
        (true, _) => "1-D".to_string(),
        (false, true) => format!("mrope_section {:?} (interleaved)", t.mrope_section),
        (false, false) => format!("mrope_section {:?} (sectioned)", t.mrope_section),
    };
    line("rope", format!("theta {}, {axes}{scaling}", t.rope_theta));
    let Some(v) = &cfg.vision else {
        line("vision", "none (text only)".into());
        return finish(
            s,
            cfg.tie_word_embeddings,
            &counts,
            &files,
            &infos,
            dir,
            false,
        );
    };
    let (depth, width, heads, mlp, patch, temporal) = v.summary();
    line(
        "vision",
        format!(
            "depth {depth}, hidden {width}, heads {heads}, mlp {mlp}, patch {patch}x{patch} (temporal {temporal}), merge {}",
            v.spatial_merge_size()
        ),
    );
    match v {
        VisionSpec::Qwen3Vl(v) => line(
            "deepstack",
            format!(
                "vision blocks {:?} -> first {} decoder layers",
                v.deepstack_visual_indexes,
                v.deepstack_visual_indexes.len()
            ),
        ),
        VisionSpec::Qwen2Vl(v) => {
            if let Some(w) = v.window_size {
                line(
                    "windows",
                    format!(
                        "{w} px; full attention in blocks {:?}",
                        v.fullatt_block_indexes
                    ),
                );
            }
        }
    }
    finish(
        s,
        cfg.tie_word_embeddings,
        &counts,
        &files,
        &infos,
        dir,
        true,
    )
}

/// The parameter, weight and image lines of [`describe`].
fn finish(
    mut s: String,
    tied: bool,
    counts: &ParamCounts,
    files: &[std::path::PathBuf],
    infos: &[weights::TensorInfo],
    dir: &Path,
    images: bool,
) -> Result<String> {
    let mut line = |k: &str, val: String| s.push_str(&format!("{k:<22} {val}\n"));
    if images {
        line("parameters: vision", human(counts.vision));
    }
    line("parameters: language", human(counts.language));
    line(
        "parameters: head",
        if tied {
            "tied to token embeddings".to_string()
        } else {
            human(counts.head)
        },
    );
    if counts.other > 0 {
        line("parameters: other", human(counts.other));
    }
    line(
        "parameters: total",
        format!("{} ({})", human(counts.total()), counts.total()),
    );
    line("dtype", weights::dominant_dtype(infos));
    line(
        "weights",
        format!("{} file(s), {} tensors", files.len(), infos.len()),
    );
    match ImageProcessorConfig::from_dir(dir) {
        _ if !images => {}
        Ok(p) => line(
            "images",
            format!(
                "pixels {}..{} (resized to multiples of {}), mean {:?}, std {:?}",
                p.min_pixels,
                p.max_pixels,
                p.patch_size * p.merge_size,
                p.image_mean,
                p.image_std
            ),
        ),
        Err(e) => line(
            "images",
            format!("no usable preprocessor_config.json ({e:#})"),
        ),
    }
    Ok(s)
}
