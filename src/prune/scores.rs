//! Hidden-state similarity scores s_k(i) (docs/SPEC.md "The method", step 1) and the `sim.json`
//! file.
//!
//! For pack size k and start index i (with i + k ≤ L-1), a sample's score is the mean over
//! token positions of `cos(h_i[t], h_{i+k}[t])`; it measures how little layers i..i+k-1 change
//! the hidden state. s_k(i) is the mean of the per-sample scores. So pack k has exactly the
//! start indices 0..=L-1-k (none when k ≥ L), and the last decoder layer L-1 is never covered.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Deserialize, Serialize, Serializer};

/// Per-sample cosine scores and their means, for pack sizes 1..=`max_pack()`.
///
/// Invariants (checked by every constructor): `num_layers ≥ 2`; pack k has start indices
/// exactly 0..=L-1-k; every list is non-empty and finite; all lists of one pack have the same
/// length. Different packs may hold different sample counts (the reference scripts run one
/// pass per pack size); `num_samples` is the largest of them (our own analysis writes the
/// same count for every pack).
#[derive(Debug, Clone, PartialEq)]
pub struct SimilarityScores {
    /// Model name or directory the scores were computed from ("" when unknown).
    pub model: String,
    /// `model_type` of the model's config ("" when unknown).
    pub model_type: String,
    num_layers: usize,
    num_samples: usize,
    /// `packs[k-1][i]`: per-sample scores of the pack of size k starting at layer i.
    packs: Vec<Vec<Vec<f64>>>,
    /// `means[k-1][i]` = s_k(i).
    means: Vec<Vec<f64>>,
}

impl SimilarityScores {
    /// Builds and validates scores; `packs[k-1][i]` holds the per-sample scores of pack k at
    /// start index i.
    pub fn new(
        model: impl Into<String>,
        model_type: impl Into<String>,
        num_layers: usize,
        packs: Vec<Vec<Vec<f64>>>,
    ) -> Result<Self> {
        Self::build(model.into(), model_type.into(), num_layers, packs).map_err(|e| anyhow!(e))
    }

    /// Scores with one "sample" per start index, equal to the given mean s_k(i)
    /// (`means[k-1][i]`). Handy for synthetic score tables.
    pub fn from_means(num_layers: usize, means: Vec<Vec<f64>>) -> Result<Self> {
        let packs = means
            .into_iter()
            .map(|pack| pack.into_iter().map(|m| vec![m]).collect())
            .collect();
        Self::new("", "", num_layers, packs)
    }

    fn build(
        model: String,
        model_type: String,
        num_layers: usize,
        packs: Vec<Vec<Vec<f64>>>,
    ) -> std::result::Result<Self, String> {
        if num_layers < 2 {
            return Err(format!(
                "num_layers is {num_layers}; similarity needs at least 2 decoder layers"
            ));
        }
        if packs.is_empty() {
            return Err("no packs (expected pack sizes 1, 2, ...)".into());
        }
        let mut num_samples = 0;
        for (ki, pack) in packs.iter().enumerate() {
            validate_pack(ki + 1, num_layers, pack)?;
            num_samples = num_samples.max(pack.first().map_or(0, Vec::len));
        }
        let means = packs
            .iter()
            .map(|pack| {
                pack.iter()
                    .map(|l| l.iter().sum::<f64>() / l.len() as f64)
                    .collect()
            })
            .collect();
        Ok(Self {
            model,
            model_type,
            num_layers,
            num_samples,
            packs,
            means,
        })
    }

    /// Number of decoder layers L of the analysed model.
    pub fn num_layers(&self) -> usize {
        self.num_layers
    }

    /// Largest per-pack sample count.
    pub fn num_samples(&self) -> usize {
        self.num_samples
    }

    /// Largest pack size present (packs 1..=max_pack are all present).
    pub fn max_pack(&self) -> usize {
        self.packs.len()
    }

    /// Whether pack size `k` is present (it may still have no start index when k ≥ L).
    pub fn has_pack(&self, k: usize) -> bool {
        k >= 1 && k <= self.packs.len()
    }

    /// s_k(i), the mean score of the pack of size k starting at layer i; `None` if undefined.
    pub fn mean(&self, k: usize, i: usize) -> Option<f64> {
        self.means.get(k.checked_sub(1)?)?.get(i).copied()
    }

    /// All s_k(i) for i = 0..=L-1-k (empty if pack k is absent).
    pub fn means(&self, k: usize) -> &[f64] {
        k.checked_sub(1)
            .and_then(|ki| self.means.get(ki))
            .map_or(&[], Vec::as_slice)
    }

    /// The per-sample scores of the pack of size k starting at layer i.
    pub fn samples(&self, k: usize, i: usize) -> Option<&[f64]> {
        self.packs.get(k.checked_sub(1)?)?.get(i).map(Vec::as_slice)
    }

    /// Parses `sim.json` text; `origin` (usually the file name) prefixes every error.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Self> {
        #[derive(Deserialize)]
        struct SimIn {
            #[serde(default)]
            model: String,
            #[serde(default)]
            model_type: String,
            num_layers: usize,
            num_samples: Option<usize>,
            packs: BTreeMap<String, BTreeMap<String, Vec<f64>>>,
        }
        let raw: SimIn = serde_json::from_str(text).map_err(|e| json_error(origin, text, e))?;
        let fail = |msg: String| anyhow!("{origin}: {msg}");
        let mut by_k = BTreeMap::new();
        for (key, pack) in raw.packs {
            let k = parse_index(&key).filter(|&k| k >= 1).ok_or_else(|| {
                fail(format!("packs: key \"{key}\" is not a pack size 1, 2, ..."))
            })?;
            by_k.insert(k, pack);
        }
        if by_k.is_empty() {
            return Err(fail("packs is empty".into()));
        }
        let max_pack = *by_k.keys().next_back().unwrap_or(&0);
        if by_k.len() != max_pack {
            let found: Vec<String> = by_k.keys().map(|k| format!("\"{k}\"")).collect();
            return Err(fail(format!(
                "packs must have keys \"1\"..\"{max_pack}\" without gaps; found {}",
                found.join(", ")
            )));
        }
        let mut packs = Vec::with_capacity(max_pack);
        for (k, pack) in by_k {
            packs.push(parse_pack(k, pack, raw.num_layers).map_err(fail)?);
        }
        let s = Self::build(raw.model, raw.model_type, raw.num_layers, packs).map_err(fail)?;
        if let Some(n) = raw.num_samples {
            if n != s.num_samples {
                return Err(fail(format!(
                    "num_samples is {n} but the score lists hold {} samples",
                    s.num_samples
                )));
            }
        }
        Ok(s)
    }

    /// Reads `sim.json` (docs/SPEC.md "File formats").
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = read_text(path)?;
        Self::from_json_str(&text, &path.display().to_string())
    }

    /// Reads the reference scripts' per-pack files: `paths[j]` holds pack size j+1 as a JSON
    /// object `{"0": [per-sample scores], "1": [...], ...}`. The layer count is inferred from
    /// pack 1 (start indices 0..=L-2, so L = count + 1); the other packs must agree with it.
    pub fn from_pack_files<P: AsRef<Path>>(paths: &[P]) -> Result<Self> {
        if paths.is_empty() {
            return Err(anyhow!(
                "no per-pack score files given (pack 1 is required)"
            ));
        }
        let mut num_layers = 0;
        let mut packs = Vec::with_capacity(paths.len());
        for (ki, path) in paths.iter().enumerate() {
            let k = ki + 1;
            let path = path.as_ref();
            let origin = path.display().to_string();
            let text = read_text(path)?;
            let raw: BTreeMap<String, Vec<f64>> =
                serde_json::from_str(&text).map_err(|e| json_error(&origin, &text, e))?;
            if k == 1 {
                if raw.is_empty() {
                    return Err(anyhow!("{origin}: pack 1 file has no start indices"));
                }
                num_layers = raw.len() + 1;
            } else if raw.len() != num_layers.saturating_sub(k) {
                return Err(anyhow!(
                    "{origin}: pack {k} file has {} start indices but the pack 1 file implies \
                     {num_layers} layers, which give {}",
                    raw.len(),
                    start_range(num_layers, k)
                ));
            }
            let pack = parse_pack(k, raw, num_layers).map_err(|m| anyhow!("{origin}: {m}"))?;
            validate_pack(k, num_layers, &pack).map_err(|m| anyhow!("{origin}: {m}"))?;
            packs.push(pack);
        }
        Self::build(String::new(), String::new(), num_layers, packs).map_err(|m| anyhow!(m))
    }

    /// The `sim.json` text (compact JSON, keys in numeric order, trailing newline).
    pub fn to_json_string(&self) -> String {
        let mut s = serde_json::to_string(self).expect("scores serialise");
        s.push('\n');
        s
    }

    /// Writes `sim.json` atomically (temporary file in the same directory, then rename).
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::fsio::write_atomic(path.as_ref(), self.to_json_string().as_bytes())
    }
}

impl Serialize for SimilarityScores {
    fn serialize<S: Serializer>(&self, ser: S) -> std::result::Result<S::Ok, S::Error> {
        struct Pack<'a>(&'a [Vec<f64>]);
        impl Serialize for Pack<'_> {
            fn serialize<S: Serializer>(&self, ser: S) -> std::result::Result<S::Ok, S::Error> {
                let mut m = ser.serialize_map(Some(self.0.len()))?;
                for (i, list) in self.0.iter().enumerate() {
                    m.serialize_entry(&i.to_string(), list)?;
                }
                m.end()
            }
        }
        struct Packs<'a>(&'a [Vec<Vec<f64>>]);
        impl Serialize for Packs<'_> {
            fn serialize<S: Serializer>(&self, ser: S) -> std::result::Result<S::Ok, S::Error> {
                let mut m = ser.serialize_map(Some(self.0.len()))?;
                for (ki, pack) in self.0.iter().enumerate() {
                    m.serialize_entry(&(ki + 1).to_string(), &Pack(pack))?;
                }
                m.end()
            }
        }
        let mut st = ser.serialize_struct("SimilarityScores", 5)?;
        st.serialize_field("model", &self.model)?;
        st.serialize_field("model_type", &self.model_type)?;
        st.serialize_field("num_layers", &self.num_layers)?;
        st.serialize_field("num_samples", &self.num_samples)?;
        st.serialize_field("packs", &Packs(&self.packs))?;
        st.end()
    }
}

/// Checks one pack: start indices exactly 0..=L-1-k, non-empty lists of equal length, finite.
fn validate_pack(
    k: usize,
    num_layers: usize,
    pack: &[Vec<f64>],
) -> std::result::Result<(), String> {
    let expected = num_layers.saturating_sub(k);
    if pack.len() != expected {
        return Err(format!(
            "pack {k} has {} start indices but {num_layers} layers give {}",
            pack.len(),
            start_range(num_layers, k)
        ));
    }
    for (i, list) in pack.iter().enumerate() {
        if list.is_empty() {
            return Err(format!("pack {k} start {i}: empty score list"));
        }
        if list.len() != pack[0].len() {
            return Err(format!(
                "pack {k} start {i}: {} scores but start 0 has {}",
                list.len(),
                pack[0].len()
            ));
        }
        if let Some(j) = list.iter().position(|x| !x.is_finite()) {
            return Err(format!(
                "pack {k} start {i}: score {j} is not a finite number"
            ));
        }
    }
    Ok(())
}

/// "start indices 0..=N" or "no start indices" for pack k of an L-layer model.
fn start_range(num_layers: usize, k: usize) -> String {
    match num_layers.checked_sub(k + 1) {
        Some(last) => format!("start indices 0..={last}"),
        None => "no start indices".into(),
    }
}

/// A canonical decimal index ("0", "17"; not "01", "+1" or " 1").
fn parse_index(key: &str) -> Option<usize> {
    let v: usize = key.parse().ok()?;
    (v.to_string() == key).then_some(v)
}

/// Orders one pack's lists by start index, requiring exactly 0..=L-1-k.
fn parse_pack(
    k: usize,
    raw: BTreeMap<String, Vec<f64>>,
    num_layers: usize,
) -> std::result::Result<Vec<Vec<f64>>, String> {
    let count = num_layers.saturating_sub(k);
    let mut slots: Vec<Option<Vec<f64>>> = vec![None; count];
    for (key, list) in raw {
        let i = parse_index(&key)
            .ok_or_else(|| format!("pack {k}: key \"{key}\" is not a start index"))?;
        if i >= count {
            return Err(format!(
                "pack {k}: start index {i} out of range ({num_layers} layers give {})",
                start_range(num_layers, k)
            ));
        }
        slots[i] = Some(list);
    }
    slots
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            s.ok_or_else(|| {
                format!(
                    "pack {k}: start index {i} missing ({num_layers} layers give {})",
                    start_range(num_layers, k)
                )
            })
        })
        .collect()
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))
}

fn json_error(origin: &str, text: &str, e: serde_json::Error) -> anyhow::Error {
    let hint = if text.contains("NaN") || text.contains("Infinity") {
        " (NaN and Infinity are not valid scores)"
    } else {
        ""
    };
    anyhow!("{origin}: invalid JSON: {e}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn err_of(text: &str) -> String {
        let e = SimilarityScores::from_json_str(text, "sim.json").unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.starts_with("sim.json: "), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        msg
    }

    /// L = 4: pack 1 has starts 0..=2, pack 2 0..=1, pack 3 only 0.
    const SIM4: &str = r#"{"model": "m", "model_type": "qwen3_vl", "num_layers": 4, "num_samples": 2,
        "packs": {"1": {"0": [0.5, 0.7], "1": [0.25, 0.75], "2": [1, 0]},
                  "2": {"1": [0.1, 0.3], "0": [0.2, 0.2]},
                  "3": {"0": [0.875, 0.625]}}}"#;

    #[test]
    fn reads_sim_json_and_means() {
        let s = SimilarityScores::from_json_str(SIM4, "sim.json").unwrap();
        assert_eq!(s.num_layers(), 4);
        assert_eq!(s.num_samples(), 2);
        assert_eq!(s.max_pack(), 3);
        assert_eq!(s.model, "m");
        assert_eq!(s.model_type, "qwen3_vl");
        assert_eq!(s.mean(1, 0), Some(0.6));
        assert_eq!(s.mean(1, 1), Some(0.5));
        assert_eq!(s.mean(1, 2), Some(0.5));
        assert_eq!(s.mean(1, 3), None);
        assert_eq!(s.mean(2, 0), Some(0.2));
        assert_eq!(s.mean(2, 1), Some(0.2));
        assert_eq!(s.mean(3, 0), Some(0.75));
        assert_eq!(s.mean(3, 1), None);
        assert_eq!(s.mean(4, 0), None);
        assert_eq!(s.mean(0, 0), None);
        assert_eq!(s.samples(2, 1), Some(&[0.1, 0.3][..]));
        assert_eq!(s.means(3), &[0.75]);
        assert!(s.means(4).is_empty());
    }

    #[test]
    fn sim_json_round_trip_is_exact_and_ordered() {
        let dir = tempfile::tempdir().unwrap();
        // 12 layers so that keys "10" exist and numeric order differs from string order.
        let l = 12;
        let packs: Vec<Vec<Vec<f64>>> = (1..=3)
            .map(|k| {
                (0..l - k)
                    .map(|i| vec![0.1 * i as f64 + 0.01 * k as f64, 1.0 / 3.0])
                    .collect()
            })
            .collect();
        let s = SimilarityScores::new("dir/x", "qwen3_vl", l, packs).unwrap();
        let path = dir.path().join("sim.json");
        s.write(&path).unwrap();
        let back = SimilarityScores::read(&path).unwrap();
        // serde_json writes the shortest round-trip form; it parses it back exactly only with
        // its `float_roundtrip` feature (otherwise 17-digit values may come back 1 ulp off).
        let exact =
            serde_json::from_str::<f64>("0.21000000000000002").unwrap() == 0.21000000000000002;
        if exact {
            assert_eq!(back, s);
        } else {
            assert_eq!((back.num_layers(), back.num_samples()), (12, 2));
            assert_eq!(
                (back.model.as_str(), back.model_type.as_str()),
                ("dir/x", "qwen3_vl")
            );
            for k in 1..=3 {
                for i in 0..12 - k {
                    let (a, b) = (back.samples(k, i).unwrap(), s.samples(k, i).unwrap());
                    assert_eq!(a.len(), b.len());
                    for (x, y) in a.iter().zip(b) {
                        assert!((x - y).abs() <= 2.0 * f64::EPSILON * y.abs(), "{x} vs {y}");
                    }
                }
            }
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(
            r#"{"model":"dir/x","model_type":"qwen3_vl","num_layers":12,"num_samples":2,"packs":{"1":{"0":["#
        ));
        let p9 = text.find(r#""9":"#).unwrap();
        let p10 = text.find(r#""10":"#).unwrap();
        assert!(p9 < p10);
        // No temporary file left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn tiny_model_with_empty_pack() {
        // L = 3: pack 3 would need i + 3 <= 2, so it has no start index.
        let t = r#"{"num_layers": 3, "packs": {"1": {"0": [0.5], "1": [0.6]}, "2": {"0": [0.4]}, "3": {}}}"#;
        let s = SimilarityScores::from_json_str(t, "sim.json").unwrap();
        assert_eq!(s.max_pack(), 3);
        assert!(s.has_pack(3));
        assert!(s.means(3).is_empty());
        assert_eq!(s.model, "");
        assert_eq!(s.num_samples(), 1);
    }

    #[test]
    fn reads_per_pack_files() {
        let dir = tempfile::tempdir().unwrap();
        let p1 = write(
            dir.path(),
            "pack1.json",
            r#"{"0": [0.5, 0.7, 0.9], "1": [0.1, 0.2, 0.3], "2": [1.0, 1.0, 1.0], "3": [0, 0, 0.375]}"#,
        );
        let p2 = write(
            dir.path(),
            "pack2.json",
            r#"{"2": [0.2], "0": [0.4], "1": [0.6]}"#,
        );
        let p3 = write(
            dir.path(),
            "pack3.json",
            r#"{"0": [0.375, 0.625], "1": [0.25, 0.25]}"#,
        );
        let s = SimilarityScores::from_pack_files(&[&p1, &p2, &p3]).unwrap();
        assert_eq!(s.num_layers(), 5);
        assert_eq!(s.max_pack(), 3);
        assert_eq!(s.num_samples(), 3);
        assert_eq!(s.mean(1, 3), Some(0.125));
        assert_eq!(s.mean(2, 0), Some(0.4));
        assert_eq!(s.mean(2, 2), Some(0.2));
        assert_eq!(s.mean(3, 0), Some(0.5));
        assert_eq!(s.mean(3, 1), Some(0.25));
        // Pack 1 alone is enough for some strategies.
        let s1 = SimilarityScores::from_pack_files(&[&p1]).unwrap();
        assert_eq!(s1.max_pack(), 1);
        assert_eq!(s1.num_layers(), 5);

        // Pack 2 file for a different layer count.
        let bad = write(dir.path(), "bad2.json", r#"{"0": [0.4], "1": [0.6]}"#);
        let e = format!(
            "{:#}",
            SimilarityScores::from_pack_files(&[&p1, &bad]).unwrap_err()
        );
        assert!(e.contains("bad2.json") && e.contains("5 layers"), "{e}");
        // Right count, wrong indices.
        let bad = write(dir.path(), "bad3.json", r#"{"0": [0.4], "2": [0.6]}"#);
        let e = format!(
            "{:#}",
            SimilarityScores::from_pack_files(&[&p1, &p2, &bad]).unwrap_err()
        );
        assert!(
            e.contains("bad3.json") && e.contains("start index 2 out of range"),
            "{e}"
        );
        // Unequal lengths inside the pack 2 file.
        let bad = write(
            dir.path(),
            "uneq.json",
            r#"{"0": [0.4], "1": [0.6, 0.1], "2": [1]}"#,
        );
        let e = format!(
            "{:#}",
            SimilarityScores::from_pack_files(&[&p1, &bad]).unwrap_err()
        );
        assert!(
            e.contains("uneq.json") && e.contains("pack 2 start 1"),
            "{e}"
        );
        // Not an object of lists.
        let bad = write(dir.path(), "list.json", r#"[0.1, 0.2]"#);
        let e = format!(
            "{:#}",
            SimilarityScores::from_pack_files(&[&bad]).unwrap_err()
        );
        assert!(e.contains("list.json: invalid JSON"), "{e}");
        let e = format!(
            "{:#}",
            SimilarityScores::from_pack_files(&[dir.path().join("nope.json")]).unwrap_err()
        );
        assert!(e.contains("nope.json"), "{e}");
    }

    #[test]
    fn malformed_sim_json() {
        let e = err_of("{");
        assert!(e.contains("invalid JSON"), "{e}");
        let e = err_of(r#"{"num_layers": 3, "packs": {"1": {"0": [NaN], "1": [0.6]}}}"#);
        assert!(e.contains("NaN"), "{e}");
        let e = err_of(r#"{"num_layers": 3, "packs": {"1": {"0": [0.5], "1": ["x"]}}}"#);
        assert!(e.contains("invalid JSON"), "{e}");
        let e = err_of(r#"{"packs": {"1": {"0": [0.5], "1": [0.6]}}}"#);
        assert!(e.contains("num_layers"), "{e}");
        // Missing start index.
        let e = err_of(r#"{"num_layers": 4, "packs": {"1": {"0": [0.5], "2": [0.6]}}}"#);
        assert!(e.contains("pack 1: start index 1 missing"), "{e}");
        // Start index beyond i + k <= L-1.
        let e =
            err_of(r#"{"num_layers": 3, "packs": {"1": {"0": [0.5], "1": [0.6], "2": [0.7]}}}"#);
        assert!(
            e.contains("start index 2 out of range") && e.contains("0..=1"),
            "{e}"
        );
        let e = err_of(r#"{"num_layers": 3, "packs": {"1": {"0": [0.5], "01": [0.6]}}}"#);
        assert!(e.contains("\"01\" is not a start index"), "{e}");
        // Empty list, unequal lengths.
        let e = err_of(r#"{"num_layers": 3, "packs": {"1": {"0": [0.5], "1": []}}}"#);
        assert!(e.contains("pack 1 start 1: empty score list"), "{e}");
        let e = err_of(r#"{"num_layers": 3, "packs": {"1": {"0": [0.5], "1": [0.6, 0.6]}}}"#);
        assert!(
            e.contains("pack 1 start 1: 2 scores but start 0 has 1"),
            "{e}"
        );
        // Pack keys must be 1..K without gaps.
        let e = err_of(r#"{"num_layers": 3, "packs": {"1": {"0": [0.5], "1": [0.6]}, "3": {}}}"#);
        assert!(e.contains("without gaps"), "{e}");
        let e = err_of(r#"{"num_layers": 3, "packs": {"0": {}}}"#);
        assert!(e.contains("\"0\" is not a pack size"), "{e}");
        let e = err_of(r#"{"num_layers": 3, "packs": {}}"#);
        assert!(e.contains("packs is empty"), "{e}");
        // num_samples disagreeing with the lists.
        let e = err_of(
            r#"{"num_layers": 3, "num_samples": 5, "packs": {"1": {"0": [0.5], "1": [0.6]}}}"#,
        );
        assert!(e.contains("num_samples is 5"), "{e}");
        let e = err_of(r#"{"num_layers": 1, "packs": {"1": {}}}"#);
        assert!(e.contains("at least 2"), "{e}");
        // Out-of-range number literal.
        let e = err_of(r#"{"num_layers": 3, "packs": {"1": {"0": [1e999], "1": [0.6]}}}"#);
        assert!(e.contains("sim.json"), "{e}");
        // Unreadable file names the file.
        let e = format!(
            "{:#}",
            SimilarityScores::read("/nonexistent/sim.json").unwrap_err()
        );
        assert!(e.contains("/nonexistent/sim.json"), "{e}");
    }

    #[test]
    fn constructor_rejects_non_finite() {
        let e = SimilarityScores::from_means(3, vec![vec![0.5, f64::NAN]]).unwrap_err();
        assert!(e
            .to_string()
            .contains("pack 1 start 1: score 0 is not a finite number"));
        let e = SimilarityScores::from_means(3, vec![vec![0.5]]).unwrap_err();
        assert!(e.to_string().contains("pack 1 has 1 start indices"), "{e}");
    }
}
