//! `plan.json` (docs/SPEC.md "File formats"): which decoder layers are dropped, fine-tuned,
//! frozen, and which frozen layers are triplet anchors.
//!
//! Role sets, all in original layer indices and sorted ascending:
//! - `drop`: layers removed by pruning; `kept` is every other layer, in order, i.e. the
//!   original index of each layer of the pruned model.
//! - `finetune`: kept layers trained during recovery.
//! - `freeze`: every kept layer that is not fine-tuned (SPEC: "every layer that is neither
//!   dropped nor fine-tuned is frozen"), so it **includes** the anchors.
//! - `anchors`: the frozen third layer i+2 of each accepted triplet of the `interlace` /
//!   `interlace-oa` rules; informational (a subset of `freeze`, disjoint from `finetune`).
//!   Other strategies have none.

use std::fmt;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};

use super::scores::SimilarityScores;

/// A layer-selection plan; see the module documentation for the meaning of each set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Strategy name (e.g. "interlace", "sleb"); any string is accepted when reading.
    pub strategy: String,
    /// Requested fraction of layers to drop (for a composed plan: dropped / num_layers).
    pub ratio: f64,
    /// Decoder layer count of the original (unpruned) model.
    pub num_layers: usize,
    pub drop: Vec<usize>,
    pub finetune: Vec<usize>,
    pub freeze: Vec<usize>,
    pub anchors: Vec<usize>,
    pub kept: Vec<usize>,
}

/// The role of one decoder layer in a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Drop,
    Finetune,
    /// Frozen third layer of an accepted triplet.
    Anchor,
    Freeze,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Drop => "drop",
            Role::Finetune => "finetune",
            Role::Anchor => "anchor",
            Role::Freeze => "freeze",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Plan {
    /// Builds a plan from its drop, fine-tune and anchor sets (any order; `kept` and `freeze`
    /// are derived) and validates it.
    pub fn from_roles(
        strategy: impl Into<String>,
        ratio: f64,
        num_layers: usize,
        mut drop: Vec<usize>,
        mut finetune: Vec<usize>,
        mut anchors: Vec<usize>,
    ) -> Result<Plan> {
        drop.sort_unstable();
        finetune.sort_unstable();
        anchors.sort_unstable();
        let kept: Vec<usize> = (0..num_layers)
            .filter(|l| drop.binary_search(l).is_err())
            .collect();
        let freeze = kept
            .iter()
            .copied()
            .filter(|l| finetune.binary_search(l).is_err())
            .collect();
        let plan = Plan {
            strategy: strategy.into(),
            ratio,
            num_layers,
            drop,
            finetune,
            freeze,
            anchors,
            kept,
        };
        plan.validate().map_err(|e| anyhow!("invalid plan: {e}"))?;
        Ok(plan)
    }

    /// Checks every invariant of the role sets; the message says what is wrong.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let l = self.num_layers;
        if l == 0 {
            return Err("num_layers is 0".into());
        }
        if !(self.ratio.is_finite() && (0.0..1.0).contains(&self.ratio)) {
            return Err(format!("ratio {} is outside [0, 1)", self.ratio));
        }
        for (name, set) in [
            ("drop", &self.drop),
            ("finetune", &self.finetune),
            ("freeze", &self.freeze),
            ("anchors", &self.anchors),
            ("kept", &self.kept),
        ] {
            if let Some(&x) = set.iter().find(|&&x| x >= l) {
                return Err(format!("{name} has layer {x} but num_layers is {l}"));
            }
            if set.windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!("{name} is not strictly ascending"));
            }
        }
        let has = |set: &[usize], x: usize| set.binary_search(&x).is_ok();
        if let Some(&x) = self.drop.iter().find(|&&x| has(&self.kept, x)) {
            return Err(format!("layer {x} is both dropped and kept"));
        }
        if self.drop.len() + self.kept.len() != l {
            return Err(format!(
                "drop and kept together cover {} of the {l} layers",
                self.drop.len() + self.kept.len()
            ));
        }
        if self.kept.is_empty() {
            return Err("every layer is dropped".into());
        }
        if let Some(&x) = self.finetune.iter().find(|&&x| !has(&self.kept, x)) {
            return Err(format!("fine-tuned layer {x} is not kept"));
        }
        if let Some(&x) = self.anchors.iter().find(|&&x| !has(&self.kept, x)) {
            return Err(format!("anchor layer {x} is not kept"));
        }
        if let Some(&x) = self.anchors.iter().find(|&&x| has(&self.finetune, x)) {
            return Err(format!("anchor layer {x} is also fine-tuned"));
        }
        let freeze: Vec<usize> = self
            .kept
            .iter()
            .copied()
            .filter(|&x| !has(&self.finetune, x))
            .collect();
        if freeze != self.freeze {
            return Err("freeze must list exactly the kept layers that are not fine-tuned".into());
        }
        Ok(())
    }

    /// The role of `layer`, or `None` outside 0..num_layers.
    pub fn role(&self, layer: usize) -> Option<Role> {
        let has = |set: &[usize]| set.binary_search(&layer).is_ok();
        if layer >= self.num_layers {
            None
        } else if has(&self.drop) {
            Some(Role::Drop)
        } else if has(&self.finetune) {
            Some(Role::Finetune)
        } else if has(&self.anchors) {
            Some(Role::Anchor)
        } else {
            Some(Role::Freeze)
        }
    }

    /// Errors unless the plan was made for a model with `num_layers` decoder layers.
    pub fn check_num_layers(&self, num_layers: usize) -> Result<()> {
        if self.num_layers != num_layers {
            return Err(anyhow!(
                "plan is for a model with {} decoder layers but this model has {num_layers}",
                self.num_layers
            ));
        }
        Ok(())
    }

    /// Parses `plan.json` text; `origin` (usually the file name) prefixes every error.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Plan> {
        let plan: Plan =
            serde_json::from_str(text).map_err(|e| anyhow!("{origin}: invalid plan JSON: {e}"))?;
        plan.validate().map_err(|e| anyhow!("{origin}: {e}"))?;
        Ok(plan)
    }

    /// Reads and validates `plan.json`.
    pub fn read(path: impl AsRef<Path>) -> Result<Plan> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        Self::from_json_str(&text, &path.display().to_string())
    }

    /// Reads `plan.json` and checks it is for a model with `num_layers` layers; errors name
    /// the file.
    pub fn read_for(path: impl AsRef<Path>, num_layers: usize) -> Result<Plan> {
        let path = path.as_ref();
        let plan = Self::read(path)?;
        plan.check_num_layers(num_layers)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        Ok(plan)
    }

    /// The `plan.json` text: one field per line, in docs/SPEC.md's order, trailing newline.
    pub fn to_json_string(&self) -> String {
        let list = |v: &[usize]| serde_json::to_string(v).expect("list serialises");
        format!(
            "{{\n  \"strategy\": {},\n  \"ratio\": {},\n  \"num_layers\": {},\n  \"drop\": {},\n  \
             \"finetune\": {},\n  \"freeze\": {},\n  \"anchors\": {},\n  \"kept\": {}\n}}\n",
            serde_json::to_string(&self.strategy).expect("string serialises"),
            serde_json::to_string(&self.ratio).expect("ratio serialises"),
            self.num_layers,
            list(&self.drop),
            list(&self.finetune),
            list(&self.freeze),
            list(&self.anchors),
            list(&self.kept),
        )
    }

    /// Writes `plan.json` atomically (temporary file in the same directory, then rename).
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::fsio::write_atomic(path.as_ref(), self.to_json_string().as_bytes())
    }

    /// Composition: `self` was made on an already pruned model whose layer `p` is original
    /// layer `kept[p]` (the pruned checkpoint's plan's `kept`) of an `original_num_layers`
    /// model. Returns the equivalent plan in original indices: the earlier drops plus the
    /// mapped new ones; fine-tune and anchor sets mapped; `num_layers` = the original count;
    /// `ratio` = total dropped / original count; the strategy name is kept.
    pub fn in_original_indices(&self, kept: &[usize], original_num_layers: usize) -> Result<Plan> {
        if kept.len() != self.num_layers {
            return Err(anyhow!(
                "plan is for a model with {} decoder layers but the pruned model keeps {}",
                self.num_layers,
                kept.len()
            ));
        }
        if kept.windows(2).any(|w| w[0] >= w[1]) {
            return Err(anyhow!("kept layer list is not strictly ascending"));
        }
        if let Some(&x) = kept.iter().find(|&&x| x >= original_num_layers) {
            return Err(anyhow!(
                "kept layer {x} is outside the original {original_num_layers} layers"
            ));
        }
        let map = |v: &[usize]| v.iter().map(|&p| kept[p]).collect::<Vec<_>>();
        let mut drop: Vec<usize> = (0..original_num_layers)
            .filter(|l| kept.binary_search(l).is_err())
            .collect();
        drop.extend(map(&self.drop));
        let ratio = drop.len() as f64 / original_num_layers as f64;
        Plan::from_roles(
            self.strategy.clone(),
            ratio,
            original_num_layers,
            drop,
            map(&self.finetune),
            map(&self.anchors),
        )
    }
}

/// A plain-text table of every layer's role with s_1(i), s_2(i), s_3(i) (the packs starting
/// at layer i; blank where undefined or when no scores are given). Scores must be for the
/// same layer count as the plan.
pub fn role_table(plan: &Plan, scores: Option<&SimilarityScores>) -> Result<String> {
    if let Some(s) = scores {
        if s.num_layers() != plan.num_layers {
            return Err(anyhow!(
                "similarity scores are for {} layers but the plan is for {}",
                s.num_layers(),
                plan.num_layers
            ));
        }
    }
    let mut out = format!(
        "{:>5}  {:<8}  {:>8}  {:>8}  {:>8}\n",
        "layer", "role", "s1", "s2", "s3"
    );
    for layer in 0..plan.num_layers {
        let role = plan.role(layer).map_or("", Role::name);
        let cell = |k: usize| {
            scores
                .and_then(|s| s.mean(k, layer))
                .map_or(String::new(), |v| format!("{v:.6}"))
        };
        let line = format!(
            "{layer:>5}  {role:<8}  {:>8}  {:>8}  {:>8}",
            cell(1),
            cell(2),
            cell(3)
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// L = 8: drop 2 and 4, tune 1 and 5, anchors 3 and 6.
    fn sample() -> Plan {
        Plan::from_roles("interlace", 0.25, 8, vec![4, 2], vec![5, 1], vec![6, 3]).unwrap()
    }

    #[test]
    fn derived_sets_and_roles() {
        let p = sample();
        assert_eq!(p.drop, vec![2, 4]);
        assert_eq!(p.finetune, vec![1, 5]);
        assert_eq!(p.anchors, vec![3, 6]);
        assert_eq!(p.kept, vec![0, 1, 3, 5, 6, 7]);
        assert_eq!(p.freeze, vec![0, 3, 6, 7]);
        use Role::*;
        let roles: Vec<Role> = (0..8).map(|l| p.role(l).unwrap()).collect();
        assert_eq!(
            roles,
            vec![Freeze, Finetune, Drop, Anchor, Drop, Finetune, Anchor, Freeze]
        );
        assert_eq!(p.role(8), None);
    }

    #[test]
    fn json_round_trip_and_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.json");
        let p = sample();
        p.write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"strategy": "interlace", "ratio": 0.25, "num_layers": 8,
                "drop": [2, 4], "finetune": [1, 5], "freeze": [0, 3, 6, 7], "anchors": [3, 6],
                "kept": [0, 1, 3, 5, 6, 7]})
        );
        // Field order as in docs/SPEC.md.
        let pos = |k: &str| text.find(&format!("\"{k}\"")).unwrap();
        let order = [
            "strategy",
            "ratio",
            "num_layers",
            "drop",
            "finetune",
            "freeze",
            "anchors",
            "kept",
        ];
        assert!(order.windows(2).all(|w| pos(w[0]) < pos(w[1])), "{text}");
        assert_eq!(Plan::read(&path).unwrap(), p);
        assert_eq!(Plan::read_for(&path, 8).unwrap(), p);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn wrong_layer_count_names_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.json");
        sample().write(&path).unwrap();
        let e = format!("{:#}", Plan::read_for(&path, 36).unwrap_err());
        assert!(
            e.contains("plan.json") && e.contains("8 decoder layers") && e.contains("36"),
            "{e}"
        );
        assert!(sample().check_num_layers(8).is_ok());
    }

    #[test]
    fn malformed_plans() {
        let ok = r#"{"strategy": "x", "ratio": 0.25, "num_layers": 4, "drop": [1],
            "finetune": [2], "freeze": [0, 3], "anchors": [], "kept": [0, 2, 3]}"#;
        assert!(Plan::from_json_str(ok, "p.json").is_ok());
        let cases = [
            (
                ok.replace("\"drop\": [1]", "\"drop\": [1, 2]"),
                "both dropped and kept",
            ),
            (
                ok.replace("\"kept\": [0, 2, 3]", "\"kept\": [0, 3]"),
                "cover 3 of the 4",
            ),
            (
                ok.replace("\"kept\": [0, 2, 3]", "\"kept\": [0, 3, 2]"),
                "kept is not strictly ascending",
            ),
            (
                ok.replace("\"finetune\": [2]", "\"finetune\": [1]"),
                "fine-tuned layer 1 is not kept",
            ),
            (
                ok.replace("\"anchors\": []", "\"anchors\": [2]"),
                "anchor layer 2 is also fine-tuned",
            ),
            (
                ok.replace("\"freeze\": [0, 3]", "\"freeze\": [0]"),
                "freeze must list",
            ),
            (
                ok.replace("\"drop\": [1]", "\"drop\": [9]"),
                "drop has layer 9",
            ),
            (ok.replace("0.25", "1.0"), "ratio 1 is outside [0, 1)"),
            (
                ok.replace("\"strategy\": \"x\",", ""),
                "missing field `strategy`",
            ),
            ("[]".to_string(), "invalid plan JSON"),
        ];
        for (text, want) in cases {
            let e = format!("{:#}", Plan::from_json_str(&text, "p.json").unwrap_err());
            assert!(e.starts_with("p.json: ") && e.contains(want), "{want}: {e}");
        }
        let e = format!("{:#}", Plan::read("/nonexistent/plan.json").unwrap_err());
        assert!(e.contains("/nonexistent/plan.json"), "{e}");
    }

    #[test]
    fn composition_maps_to_original_indices() {
        // First pruning of 8 layers kept [0, 1, 3, 5, 6, 7]. A second plan on that 6-layer
        // model drops position 1, tunes 2, anchors 3: original 1, 3, 5.
        let first = sample();
        let second = Plan::from_roles("interlace", 0.2, 6, vec![1], vec![2], vec![3]).unwrap();
        let c = second
            .in_original_indices(&first.kept, first.num_layers)
            .unwrap();
        assert_eq!(c.num_layers, 8);
        assert_eq!(c.drop, vec![1, 2, 4]);
        assert_eq!(c.finetune, vec![3]);
        assert_eq!(c.anchors, vec![5]);
        assert_eq!(c.kept, vec![0, 3, 5, 6, 7]);
        assert_eq!(c.freeze, vec![0, 5, 6, 7]);
        assert_eq!(c.ratio, 3.0 / 8.0);
        assert!(second.in_original_indices(&[0, 1, 2], 8).is_err());
        assert!(second.in_original_indices(&[0, 1, 2, 3, 4, 9], 8).is_err());
        assert!(second.in_original_indices(&[0, 1, 3, 2, 4, 5], 8).is_err());
    }

    #[test]
    fn table_lists_roles_and_scores() {
        let p = Plan::from_roles("interlace", 0.25, 4, vec![0], vec![1], vec![2]).unwrap();
        let s = SimilarityScores::from_means(
            4,
            vec![vec![0.9, 0.8, 0.95], vec![0.5, 0.25], vec![0.125]],
        )
        .unwrap();
        let t = role_table(&p, Some(&s)).unwrap();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5);
        let cols = |i: usize| lines[i].split_whitespace().collect::<Vec<_>>();
        assert_eq!(cols(0), ["layer", "role", "s1", "s2", "s3"]);
        assert_eq!(cols(1), ["0", "drop", "0.900000", "0.500000", "0.125000"]);
        assert_eq!(cols(2), ["1", "finetune", "0.800000", "0.250000"]);
        assert_eq!(cols(3), ["2", "anchor", "0.950000"]);
        assert_eq!(cols(4), ["3", "freeze"]);
        // s2 of layer 1 sits in the s2 column, s3 blank.
        assert!(lines[2].ends_with("0.250000"));
        let t = role_table(&p, None).unwrap();
        assert_eq!(
            t.lines()
                .nth(4)
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["3", "freeze"]
        );
        let s5 = SimilarityScores::from_means(5, vec![vec![0.0; 4]]).unwrap();
        assert!(role_table(&p, Some(&s5)).is_err());
    }
}
