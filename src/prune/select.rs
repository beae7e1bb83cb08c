//! Layer-selection strategies (docs/SPEC.md "The method", step 2): pure functions from
//! similarity scores to a [`Plan`].
//!
//! n = floor(L × ratio), computed as `(L as f64 * ratio) as usize` (IEEE double multiply,
//! then truncate: 36 × 0.25 → 9, 28 × 0.1 → 2). Rankings sort by score, highest first, with a
//! stable sort, so equal scores keep ascending start index.
//!
//! Each strategy produces a [`Selection`]: the drop set plus, for strategies that pair each
//! dropped layer with a neighbour (`interlace`, `interlace-oa`, `interlace-tn`,
//! `consecutive`), their own fine-tune set and triplet anchors. A [`FinetunePolicy`] then
//! decides the fine-tune set of the plan. `sleb` needs a model and calibration data, so it is
//! computed elsewhere; its drop set becomes a plan through [`Plan::from_drops`].

use std::fmt;

use anyhow::{anyhow, bail, Result};

use super::plan::Plan;
use super::scores::SimilarityScores;

/// A selection strategy (`--strategy`; its command-line name is its `plan.json` name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Strategy {
    /// The paper's rule (docs/SPEC.md): layer triplets by s_3, most redundant first; the
    /// more redundant of the first two is dropped, the other fine-tuned, the third a frozen
    /// anchor; pairs by s_2 when triplets run out.
    Interlace,
    /// Ablation: as interlace, but always drop i and tune i+1 (triplets and fallback pairs).
    InterlaceOa,
    /// Ablation: pairs (i, i+1) ranked by s_1(i); drop i, tune i+1; no anchors.
    InterlaceTn,
    /// Seeded uniform choice of n distinct layers among all L (the last layer included).
    Random,
    /// A block of n layers from the highest-s_1 layer; the next n are its fine-tune set.
    Consecutive,
    /// The n layers with the highest s_1 (lowest Block Influence).
    #[value(name = "shortgpt")]
    ShortGpt,
    /// SLEB: greedy removal of the layer whose removal raises the calibration loss least;
    /// needs --model and --data (not similarity scores).
    Sleb,
}

impl Strategy {
    /// Every strategy, in the order of the valid-names list.
    pub const ALL: [Strategy; 7] = [
        Strategy::Interlace,
        Strategy::InterlaceOa,
        Strategy::InterlaceTn,
        Strategy::Random,
        Strategy::Consecutive,
        Strategy::ShortGpt,
        Strategy::Sleb,
    ];

    /// The command-line / `plan.json` name.
    pub fn name(self) -> String {
        value_name(self)
    }

    /// Whether the strategy pairs each dropped layer with a layer to fine-tune (what
    /// [`FinetunePolicy::Paired`] uses); the others fall back to [`FinetunePolicy::Next`].
    pub fn has_pairing(self) -> bool {
        matches!(
            self,
            Strategy::Interlace
                | Strategy::InterlaceOa
                | Strategy::InterlaceTn
                | Strategy::Consecutive
        )
    }

    /// Pack sizes 1..=k the strategy reads from the similarity scores (0: none).
    pub fn packs_needed(self) -> usize {
        match self {
            Strategy::Interlace | Strategy::InterlaceOa => 3,
            Strategy::InterlaceTn | Strategy::Consecutive | Strategy::ShortGpt => 1,
            Strategy::Random | Strategy::Sleb => 0,
        }
    }
}

/// The command-line name of a value of a [`clap::ValueEnum`].
fn value_name(v: impl clap::ValueEnum) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Which kept layers are fine-tuned (`--finetune-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum FinetunePolicy {
    /// The strategy's own pairing; `Next` for strategies without one (`random`, `shortgpt`,
    /// `sleb`).
    #[default]
    Paired,
    /// For each dropped layer, the next kept layer after it (deduplicated; none after a
    /// dropped tail).
    Next,
    /// Every kept layer.
    All,
    /// No layer.
    None,
}

impl FinetunePolicy {
    pub const ALL: [FinetunePolicy; 4] = [
        FinetunePolicy::Paired,
        FinetunePolicy::Next,
        FinetunePolicy::All,
        FinetunePolicy::None,
    ];

    pub fn name(self) -> String {
        value_name(self)
    }
}

impl fmt::Display for FinetunePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Options of [`select`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelectOptions {
    /// Seed of the `random` strategy.
    pub seed: u64,
    pub finetune: FinetunePolicy,
}

impl Default for SelectOptions {
    fn default() -> Self {
        SelectOptions {
            seed: 42,
            finetune: FinetunePolicy::Paired,
        }
    }
}

/// A strategy's raw result in original layer indices (any order).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selection {
    pub drop: Vec<usize>,
    /// The strategy's own fine-tune partners; `None` for strategies without pairing.
    pub pairing: Option<Vec<usize>>,
    /// Frozen third layers of accepted triplets.
    pub anchors: Vec<usize>,
}

impl Selection {
    /// The plan for this selection under `policy`. Anchors that the policy fine-tunes are
    /// no longer anchors (roles are disjoint); the others stay, under every policy.
    pub fn into_plan(
        self,
        strategy: &str,
        ratio: f64,
        num_layers: usize,
        policy: FinetunePolicy,
    ) -> Result<Plan> {
        let mut drop = self.drop;
        drop.sort_unstable();
        if let Some(&x) = drop.iter().find(|&&x| x >= num_layers) {
            bail!("dropped layer {x} is outside the model's {num_layers} layers");
        }
        if drop.windows(2).any(|w| w[0] == w[1]) {
            bail!("a layer is dropped twice");
        }
        let dropped = |l: usize| drop.binary_search(&l).is_ok();
        let next = || -> Vec<usize> {
            let mut v: Vec<usize> = drop
                .iter()
                .filter_map(|&d| (d + 1..num_layers).find(|&l| !dropped(l)))
                .collect();
            v.dedup(); // ascending already: the next kept layer is monotone in d
            v
        };
        let finetune = match (policy, self.pairing) {
            (FinetunePolicy::Paired, Some(p)) => p,
            (FinetunePolicy::Paired, None) | (FinetunePolicy::Next, _) => next(),
            (FinetunePolicy::All, _) => (0..num_layers).filter(|&l| !dropped(l)).collect(),
            (FinetunePolicy::None, _) => Vec::new(),
        };
        let anchors = self
            .anchors
            .into_iter()
            .filter(|a| !finetune.contains(a))
            .collect();
        Plan::from_roles(strategy, ratio, num_layers, drop, finetune, anchors)
    }
}

impl Plan {
    /// A plan from a drop set computed elsewhere (e.g. by `sleb`), with the fine-tune set of
    /// `policy` (`Paired` means `Next` here, as there is no pairing).
    pub fn from_drops(
        strategy: &str,
        ratio: f64,
        num_layers: usize,
        drop: Vec<usize>,
        policy: FinetunePolicy,
    ) -> Result<Plan> {
        check_ratio(ratio)?;
        Selection {
            drop,
            pairing: None,
            anchors: Vec::new(),
        }
        .into_plan(strategy, ratio, num_layers, policy)
    }
}

fn check_ratio(ratio: f64) -> Result<()> {
    if !(ratio.is_finite() && (0.0..1.0).contains(&ratio)) {
        bail!("ratio {ratio} is outside [0, 1)");
    }
    Ok(())
}

/// n = floor(L × ratio) as IEEE double multiplication and truncation; `ratio` must be in
/// [0, 1).
pub fn drop_count(num_layers: usize, ratio: f64) -> Result<usize> {
    check_ratio(ratio)?;
    let n = (num_layers as f64 * ratio) as usize;
    if n >= num_layers && num_layers > 0 {
        bail!("ratio {ratio} would drop all {num_layers} layers");
    }
    Ok(n)
}

/// The plan of `strategy` at `ratio` for these scores. `sleb` is refused (it needs a model:
/// compute its drop set elsewhere and use [`Plan::from_drops`]).
pub fn select(
    scores: &SimilarityScores,
    strategy: Strategy,
    ratio: f64,
    opts: &SelectOptions,
) -> Result<Plan> {
    let l = scores.num_layers();
    let n = drop_count(l, ratio)?;
    (1..=strategy.packs_needed()).try_for_each(|k| need_pack(scores, k, &strategy.name()))?;
    let sel = match strategy {
        Strategy::Interlace => interlace(scores, n)?,
        Strategy::InterlaceOa => interlace_oa(scores, n)?,
        Strategy::InterlaceTn => interlace_tn(scores, n)?,
        Strategy::Random => random(l, n, opts.seed)?,
        Strategy::Consecutive => consecutive(scores, n)?,
        Strategy::ShortGpt => shortgpt(scores, n)?,
        Strategy::Sleb => bail!(
            "strategy sleb needs a model and calibration data; it cannot be computed from \
             similarity scores alone"
        ),
    };
    sel.into_plan(&strategy.name(), ratio, l, opts.finetune)
}

/// Which layer of an accepted group (i, i+1, ...) is dropped.
#[derive(Clone, Copy)]
enum DropRule {
    /// docs/SPEC.md: if s_1(i) < s_1(i+1) drop i+1 and tune i, otherwise drop i and tune i+1.
    MoreRedundant,
    /// Always drop i and tune i+1.
    First,
}

/// Start indices of pack `k`, ordered by s_k highest first; ties keep ascending index.
fn ranked(scores: &SimilarityScores, k: usize) -> Vec<usize> {
    let s = scores.means(k);
    let mut order: Vec<usize> = (0..s.len()).collect();
    // Stable sort; scores are finite, and -0.0 == 0.0 counts as a tie.
    order.sort_by(|&a, &b| s[b].partial_cmp(&s[a]).unwrap_or(std::cmp::Ordering::Equal));
    order
}

/// One greedy pass: walk pack-`k` start indices by s_k, accept the group of `size` layers
/// (i..i+size) when none is assigned, drop/tune per `rule`, anchor i+2 for triplets, stop
/// at `n` drops.
fn greedy_pass(
    scores: &SimilarityScores,
    k: usize,
    size: usize,
    rule: DropRule,
    n: usize,
    assigned: &mut [bool],
    sel: &mut Selection,
) {
    let pairing = sel.pairing.get_or_insert_with(Vec::new);
    for i in ranked(scores, k) {
        if sel.drop.len() >= n {
            return;
        }
        if i + size > assigned.len() || assigned[i..i + size].iter().any(|&a| a) {
            continue;
        }
        let drop_first = match rule {
            DropRule::First => true,
            DropRule::MoreRedundant => {
                let (a, b) = (scores.mean(1, i), scores.mean(1, i + 1));
                // Both exist for interlace groups (i + 1 ≤ L-2); treat a gap as "drop i".
                !matches!((a, b), (Some(a), Some(b)) if a < b)
            }
        };
        let (d, t) = if drop_first { (i, i + 1) } else { (i + 1, i) };
        sel.drop.push(d);
        pairing.push(t);
        if size == 3 {
            sel.anchors.push(i + 2);
        }
        assigned[i..i + size].iter_mut().for_each(|a| *a = true);
    }
}

/// The error for a ratio the rule cannot reach: `max` is what the completed walk dropped,
/// so it is the most the rule can drop for these scores. The reported ratio r = max/L
/// (nudged up if needed) satisfies floor(L × r) = max in f64.
fn infeasible(name: &str, num_layers: usize, n: usize, max: usize) -> anyhow::Error {
    let l = num_layers as f64;
    let mut r = max as f64 / l;
    while ((l * r) as usize) < max {
        r = r.next_up();
    }
    anyhow!(
        "{name}: the ratio asks for {n} of {num_layers} layers to be dropped, but the rule finds \
         at most {max} for these scores; the largest feasible ratio is {r} ({max} of \
         {num_layers} layers)"
    )
}

fn triplet_rule(
    scores: &SimilarityScores,
    n: usize,
    rule: DropRule,
    name: &str,
) -> Result<Selection> {
    let l = scores.num_layers();
    let mut assigned = vec![false; l];
    let mut sel = Selection::default();
    greedy_pass(scores, 3, 3, rule, n, &mut assigned, &mut sel);
    if sel.drop.len() < n {
        greedy_pass(scores, 2, 2, rule, n, &mut assigned, &mut sel);
    }
    if sel.drop.len() < n {
        return Err(infeasible(name, l, n, sel.drop.len()));
    }
    Ok(sel)
}

/// Errors unless pack `k` is present; a pack with no possible start index (k ≥ L) may be
/// absent and then counts as empty.
fn need_pack(scores: &SimilarityScores, k: usize, name: &str) -> Result<()> {
    if !scores.has_pack(k) && k < scores.num_layers() {
        bail!(
            "{name} needs similarity pack {k} (s_{k}) but the scores have only packs 1..={}",
            scores.max_pack()
        );
    }
    Ok(())
}

/// docs/SPEC.md's `interlace` rule for n drops: triplets (i, i+1, i+2) by s_3(i) highest first
/// (ties: ascending i), accepted when all three are unassigned; if s_1(i) < s_1(i+1) drop
/// i+1 and tune i, otherwise drop i and tune i+1; i+2 is a frozen anchor. Then pairs by
/// s_2(i) with the same drop rule. Errors (naming the largest feasible ratio) when fewer
/// than n layers can be dropped. n = 0 gives an empty selection.
pub fn interlace(scores: &SimilarityScores, n: usize) -> Result<Selection> {
    (1..=3).try_for_each(|k| need_pack(scores, k, "interlace"))?;
    triplet_rule(scores, n, DropRule::MoreRedundant, "interlace")
}

/// The `interlace-oa` ablation: as [`interlace`] (triplets by s_3, then the pair fallback by
/// s_2 — docs/SPEC.md names only the triplets; we keep the fallback so that the variant differs
/// from `interlace` in the drop rule alone), but always drop i and tune i+1.
pub fn interlace_oa(scores: &SimilarityScores, n: usize) -> Result<Selection> {
    (1..=3).try_for_each(|k| need_pack(scores, k, "interlace-oa"))?;
    triplet_rule(scores, n, DropRule::First, "interlace-oa")
}

/// The `interlace-tn` ablation: pairs (i, i+1) ranked by s_1(i) (i = 0..=L-2, so layer L-1
/// may be tuned), accepted when both are unassigned; drop i, tune i+1; no anchors, no
/// fallback. Errors like [`interlace`] when fewer than n layers can be dropped.
pub fn interlace_tn(scores: &SimilarityScores, n: usize) -> Result<Selection> {
    need_pack(scores, 1, "interlace-tn")?;
    let l = scores.num_layers();
    let mut assigned = vec![false; l];
    let mut sel = Selection::default();
    greedy_pass(scores, 1, 2, DropRule::First, n, &mut assigned, &mut sel);
    if sel.drop.len() < n {
        return Err(infeasible("interlace-tn", l, n, sel.drop.len()));
    }
    Ok(sel)
}

/// `random`: n distinct layers drawn uniformly among 0..L (the last layer may be dropped):
/// a Fisher–Yates shuffle of 0..L with [`SplitMix64`] seeded by `seed`, first n taken.
/// No pairing (`Paired` means `Next`).
pub fn random(num_layers: usize, n: usize, seed: u64) -> Result<Selection> {
    if n >= num_layers && n > 0 {
        bail!("random: cannot drop {n} of {num_layers} layers");
    }
    let mut order: Vec<usize> = (0..num_layers).collect();
    crate::rng::SplitMix64::new(seed).shuffle(&mut order);
    order.truncate(n);
    Ok(Selection {
        drop: order,
        pairing: None,
        anchors: Vec::new(),
    })
}

/// `consecutive`: the block of n layers starting at the highest-s_1 layer (ties: lowest
/// index) is dropped and the next n layers (clipped at L) are its fine-tune set. If the
/// block would run past the last layer, it is shifted down to end at layer L-1 (so it then
/// has no fine-tune partners under `Paired`).
pub fn consecutive(scores: &SimilarityScores, n: usize) -> Result<Selection> {
    need_pack(scores, 1, "consecutive")?;
    let l = scores.num_layers();
    if n == 0 {
        return Ok(Selection {
            pairing: Some(Vec::new()),
            ..Selection::default()
        });
    }
    if n >= l {
        bail!("consecutive: cannot drop {n} of {l} layers");
    }
    let best = ranked(scores, 1)[0];
    let start = best.min(l - n);
    Ok(Selection {
        drop: (start..start + n).collect(),
        pairing: Some((start + n..(start + 2 * n).min(l)).collect()),
        anchors: Vec::new(),
    })
}

/// `shortgpt`: the n layers with the highest s_1 (lowest Block Influence); ties ascending
/// index. Layer L-1 has no s_1 and is never dropped. No pairing (`Paired` means `Next`).
pub fn shortgpt(scores: &SimilarityScores, n: usize) -> Result<Selection> {
    need_pack(scores, 1, "shortgpt")?;
    let mut order = ranked(scores, 1);
    if n > order.len() {
        bail!(
            "shortgpt: cannot drop {n} layers; only {} have an s_1 score",
            order.len()
        );
    }
    order.truncate(n);
    Ok(Selection {
        drop: order,
        pairing: None,
        anchors: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(l: usize, s1: &[f64], s2: &[f64], s3: &[f64]) -> SimilarityScores {
        SimilarityScores::from_means(l, vec![s1.to_vec(), s2.to_vec(), s3.to_vec()]).unwrap()
    }

    fn plan(s: &SimilarityScores, st: Strategy, ratio: f64, policy: FinetunePolicy) -> Plan {
        let opts = SelectOptions {
            seed: 42,
            finetune: policy,
        };
        select(s, st, ratio, &opts).unwrap()
    }

    fn err(s: &SimilarityScores, st: Strategy, ratio: f64) -> String {
        format!(
            "{:#}",
            select(s, st, ratio, &SelectOptions::default()).unwrap_err()
        )
    }

    /// L = 8. s_3 (starts 0..=4) = [.90, .95, .80, .95, .70] ranks 1, 3 (tie: ascending),
    /// 0, 2, 4. s_1 (0..=6) = [.5, .6, .7, .4, .3, .2, .1].
    fn table_a() -> SimilarityScores {
        scores(
            8,
            &[0.5, 0.6, 0.7, 0.4, 0.3, 0.2, 0.1],
            &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
            &[0.90, 0.95, 0.80, 0.95, 0.70],
        )
    }

    fn sets(p: &Plan) -> [Vec<usize>; 5] {
        [
            p.drop.clone(),
            p.finetune.clone(),
            p.anchors.clone(),
            p.kept.clone(),
            p.freeze.clone(),
        ]
    }

    #[test]
    fn drop_count_is_ieee_truncation() {
        assert_eq!(drop_count(36, 0.25).unwrap(), 9);
        assert_eq!(drop_count(28, 0.1).unwrap(), 2); // 28 × 0.1 = 2.8000000000000003
        assert_eq!(drop_count(36, 0.1).unwrap(), 3); // 3.6
        assert_eq!(drop_count(10, 0.3).unwrap(), 3); // 10 × 0.3 = 3.0000000000000004
        assert_eq!(drop_count(8, 0.0).unwrap(), 0);
        for bad in [1.0, -0.1, f64::NAN, f64::INFINITY, 1.5] {
            let e = drop_count(36, bad).unwrap_err().to_string();
            assert!(e.contains("outside [0, 1)"), "{e}");
        }
    }

    #[test]
    fn interlace_ties_and_overlap() {
        // n = floor(8 × 0.25) = 2. Triplet 1 (s_3 .95, tie with 3, lower index first):
        // layers 1,2,3; s_1(1)=.6 < s_1(2)=.7, so drop 2, tune 1, anchor 3. Triplet 3
        // (3,4,5) overlaps 3: skipped; 0 (0,1,2) and 2 (2,3,4) overlap too. Triplet 4
        // (4,5,6): s_1(4)=.3 ≥ s_1(5)=.2, so drop 4, tune 5, anchor 6. Two drops: done.
        let p = plan(
            &table_a(),
            Strategy::Interlace,
            0.25,
            FinetunePolicy::Paired,
        );
        assert_eq!(
            sets(&p),
            [
                vec![2, 4],
                vec![1, 5],
                vec![3, 6],
                vec![0, 1, 3, 5, 6, 7],
                vec![0, 3, 6, 7]
            ]
        );
        assert_eq!(p.strategy, "interlace");
        assert_eq!(p.ratio, 0.25);
        assert_eq!(p.num_layers, 8);
        // n = floor(8 × 0.125) = 1: only triplet 1.
        let p = plan(
            &table_a(),
            Strategy::Interlace,
            0.125,
            FinetunePolicy::Paired,
        );
        assert_eq!(sets(&p)[..3], [vec![2], vec![1], vec![3]]);
    }

    #[test]
    fn interlace_other_policies() {
        let s = table_a();
        // Drops 2 and 4. Next: after 2 → 3, after 4 → 5; anchor 3 is tuned, so only 6 stays
        // an anchor.
        let p = plan(&s, Strategy::Interlace, 0.25, FinetunePolicy::Next);
        assert_eq!(sets(&p)[..3], [vec![2, 4], vec![3, 5], vec![6]]);
        assert_eq!(p.freeze, vec![0, 1, 6, 7]);
        let p = plan(&s, Strategy::Interlace, 0.25, FinetunePolicy::All);
        assert_eq!(p.finetune, vec![0, 1, 3, 5, 6, 7]);
        assert!(p.anchors.is_empty() && p.freeze.is_empty());
        let p = plan(&s, Strategy::Interlace, 0.25, FinetunePolicy::None);
        assert!(p.finetune.is_empty());
        assert_eq!(p.anchors, vec![3, 6]);
        assert_eq!(p.freeze, p.kept);
    }

    #[test]
    fn interlace_equal_s1_drops_first() {
        // L = 4, one triplet (0,1,2). s_1(0) = s_1(1): not "<", so drop 0, tune 1.
        let s = scores(4, &[0.5, 0.5, 0.9], &[0.1, 0.2], &[0.3]);
        let p = plan(&s, Strategy::Interlace, 0.25, FinetunePolicy::Paired);
        assert_eq!(sets(&p)[..3], [vec![0], vec![1], vec![2]]);
    }

    /// L = 7. s_3 (0..=3) = [.1, .9, .2, .3]; s_2 (0..=4) = [.99, .5, .6, .7, .8];
    /// s_1 (0..=5) = [.5, .8, .7, .5, .4, .6].
    fn table_b() -> SimilarityScores {
        scores(
            7,
            &[0.5, 0.8, 0.7, 0.5, 0.4, 0.6],
            &[0.99, 0.5, 0.6, 0.7, 0.8],
            &[0.1, 0.9, 0.2, 0.3],
        )
    }

    #[test]
    fn interlace_pair_fallback() {
        // n = floor(7 × 0.3) = 2. Triplet 1 (1,2,3): s_1(1)=.8 ≥ .7 → drop 1, tune 2,
        // anchor 3; triplets 3, 2, 0 all overlap. One drop, so pairs by s_2: pair 0 (0,1)
        // overlaps, pair 4 (4,5) is free: s_1(4)=.4 < s_1(5)=.6 → drop 5, tune 4.
        let p = plan(&table_b(), Strategy::Interlace, 0.3, FinetunePolicy::Paired);
        assert_eq!(
            sets(&p),
            [
                vec![1, 5],
                vec![2, 4],
                vec![3],
                vec![0, 2, 3, 4, 6],
                vec![0, 3, 6]
            ]
        );
    }

    fn feasible_ratio(msg: &str) -> f64 {
        let tail = msg.split("largest feasible ratio is ").nth(1).unwrap();
        tail.split_whitespace().next().unwrap().parse().unwrap()
    }

    #[test]
    fn interlace_infeasible_names_largest_ratio() {
        // n = floor(7 × 0.45) = 3, but after the two drops above the free layers are 0 and
        // 6 only (no pair start covers 6): at most 2 → 2/7.
        let e = err(&table_b(), Strategy::Interlace, 0.45);
        assert!(
            e.contains("3 of 7") && e.contains("at most 2") && e.contains("(2 of 7 layers)"),
            "{e}"
        );
        let r = feasible_ratio(&e);
        assert!((r - 2.0 / 7.0).abs() < 1e-12, "{e}");
        assert_eq!(drop_count(7, r).unwrap(), 2);
        assert_eq!(
            plan(&table_b(), Strategy::Interlace, r, FinetunePolicy::Paired)
                .drop
                .len(),
            2
        );
        // Table A: the triplets assign layers 1..=6; every pair start 0..=5 touches one of
        // them, so 3 drops (8 × 0.375) are infeasible: at most 2 → 2/8 = 0.25.
        let e = err(&table_a(), Strategy::Interlace, 0.375);
        assert!(
            e.contains("largest feasible ratio is 0.25 (2 of 8 layers)"),
            "{e}"
        );
    }

    #[test]
    fn tiny_models() {
        // L = 3: pack 3 is empty (i + 3 ≤ 2 has no solution). n = floor(3 × 0.34) = 1. No
        // triplets; pair 0 (0,1): s_1(0)=.7 < s_1(1)=.9 → drop 1, tune 0.
        let s = SimilarityScores::from_means(3, vec![vec![0.7, 0.9], vec![0.6], vec![]]).unwrap();
        let p = plan(&s, Strategy::Interlace, 0.34, FinetunePolicy::Paired);
        assert_eq!(sets(&p), [vec![1], vec![0], vec![], vec![0, 2], vec![2]]);
        // n = floor(3 × 0.67) = 2: at most 1 → 1/3.
        let e = err(&s, Strategy::Interlace, 0.67);
        assert!(e.contains("(1 of 3 layers)"), "{e}");
        assert_eq!(drop_count(3, feasible_ratio(&e)).unwrap(), 1);

        // L = 4: triplet 0 (0,1,2): s_1(0)=.9 ≥ s_1(1)=.8 → drop 0, tune 1, anchor 2.
        let s = scores(4, &[0.9, 0.8, 0.95], &[0.5, 0.6], &[0.4]);
        let p = plan(&s, Strategy::Interlace, 0.25, FinetunePolicy::Paired);
        assert_eq!(
            sets(&p),
            [vec![0], vec![1], vec![2], vec![1, 2, 3], vec![2, 3]]
        );
        // n = 2: pairs (0,1), (1,2) blocked → at most 1 → 1/4 = 0.25.
        let e = err(&s, Strategy::Interlace, 0.5);
        assert!(
            e.contains("largest feasible ratio is 0.25 (1 of 4 layers)"),
            "{e}"
        );
    }

    #[test]
    fn ratio_zero_gives_empty_plan() {
        for st in [
            Strategy::Interlace,
            Strategy::InterlaceOa,
            Strategy::InterlaceTn,
            Strategy::Random,
            Strategy::Consecutive,
            Strategy::ShortGpt,
        ] {
            let p = plan(&table_a(), st, 0.0, FinetunePolicy::Paired);
            assert!(
                p.drop.is_empty() && p.finetune.is_empty() && p.anchors.is_empty(),
                "{st}"
            );
            assert_eq!(p.kept, (0..8).collect::<Vec<_>>());
            assert_eq!(p.freeze, p.kept);
        }
        // Also just below the first whole layer: floor(8 × 0.1) = 0.
        assert!(
            plan(&table_a(), Strategy::Interlace, 0.1, FinetunePolicy::Paired)
                .drop
                .is_empty()
        );
    }

    #[test]
    fn worked_numbers_36_and_28() {
        // L = 36, s_3(i) = 1 - i/1000 strictly decreasing, s_1 constant. Triplets 0, 3, 6,
        // ... are accepted in turn (1, 2, 4, 5, ... overlap); equal s_1 → drop i, tune i+1,
        // anchor i+2. n = 9: starts 0, 3, ..., 24.
        let l = 36;
        let s3: Vec<f64> = (0..l - 3).map(|i| 1.0 - i as f64 / 1000.0).collect();
        let s = scores(l, &vec![0.5; l - 1], &vec![0.5; l - 2], &s3);
        let p = plan(&s, Strategy::Interlace, 0.25, FinetunePolicy::Paired);
        let starts: Vec<usize> = (0..9).map(|t| 3 * t).collect();
        assert_eq!(p.drop, starts);
        assert_eq!(p.finetune, starts.iter().map(|i| i + 1).collect::<Vec<_>>());
        assert_eq!(p.anchors, starts.iter().map(|i| i + 2).collect::<Vec<_>>());
        assert_eq!(p.kept.len(), 27);
        // L = 28, ratio 0.1 → 2 drops: starts 0 and 3.
        let l = 28;
        let s3: Vec<f64> = (0..l - 3).map(|i| 1.0 - i as f64 / 1000.0).collect();
        let s = scores(l, &vec![0.5; l - 1], &vec![0.5; l - 2], &s3);
        let p = plan(&s, Strategy::Interlace, 0.1, FinetunePolicy::Paired);
        assert_eq!(sets(&p)[..3], [vec![0, 3], vec![1, 4], vec![2, 5]]);
    }

    #[test]
    fn interlace_oa() {
        // Table A, n = 2: triplet 1 → drop 1, tune 2, anchor 3; triplet 4 → drop 4, tune 5,
        // anchor 6.
        let p = plan(
            &table_a(),
            Strategy::InterlaceOa,
            0.25,
            FinetunePolicy::Paired,
        );
        assert_eq!(sets(&p)[..3], [vec![1, 4], vec![2, 5], vec![3, 6]]);
        assert_eq!(p.strategy, "interlace-oa");
        // Table B, n = 2: triplet 1 → drop 1, tune 2, anchor 3; fallback pair 4 → drop 4,
        // tune 5 (not 5/4 as interlace does).
        let p = plan(
            &table_b(),
            Strategy::InterlaceOa,
            0.3,
            FinetunePolicy::Paired,
        );
        assert_eq!(sets(&p)[..3], [vec![1, 4], vec![2, 5], vec![3]]);
        let e = err(&table_b(), Strategy::InterlaceOa, 0.45);
        assert!(
            e.starts_with("interlace-oa:") && e.contains("(2 of 7 layers)"),
            "{e}"
        );
    }

    #[test]
    fn interlace_tn() {
        // L = 6, s_1 (0..=4) = [.5, .9, .9, .3, .8] ranks 1, 2, 4, 0, 3. n = floor(6 × .34)
        // = 2. Pair 1 (1,2): drop 1, tune 2. Pair 2 (2,3) overlaps. Pair 4 (4,5): drop 4,
        // tune 5 (the last layer may be tuned).
        let s = SimilarityScores::from_means(6, vec![vec![0.5, 0.9, 0.9, 0.3, 0.8]]).unwrap();
        let p = plan(&s, Strategy::InterlaceTn, 0.34, FinetunePolicy::Paired);
        assert_eq!(
            sets(&p),
            [vec![1, 4], vec![2, 5], vec![], vec![0, 2, 3, 5], vec![0, 3]]
        );
        // n = 3: pairs 0 (0,1) and 3 (3,4) overlap → at most 2 → 2/6.
        let e = err(&s, Strategy::InterlaceTn, 0.5);
        assert!(e.contains("(2 of 6 layers)"), "{e}");
        let r = feasible_ratio(&e);
        assert!((r - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(drop_count(6, r).unwrap(), 2);
    }

    #[test]
    fn shortgpt_ties_and_next_policy() {
        // L = 6, s_1 = [.5, .9, .7, .9, .1]. n = 3: 1, 3 (tie, ascending), then 2.
        // Paired → Next: after 1, 2 and 3 the next kept layer is 4.
        let s = SimilarityScores::from_means(6, vec![vec![0.5, 0.9, 0.7, 0.9, 0.1]]).unwrap();
        let p = plan(&s, Strategy::ShortGpt, 0.5, FinetunePolicy::Paired);
        assert_eq!(
            sets(&p),
            [vec![1, 2, 3], vec![4], vec![], vec![0, 4, 5], vec![0, 5]]
        );
        // n = floor(6 × 0.2) = 1: the tie goes to layer 1; next kept is 2.
        let p = plan(&s, Strategy::ShortGpt, 0.2, FinetunePolicy::Paired);
        assert_eq!(sets(&p)[..2], [vec![1], vec![2]]);
        let p = plan(&s, Strategy::ShortGpt, 0.2, FinetunePolicy::All);
        assert_eq!(p.finetune, vec![0, 2, 3, 4, 5]);
        let p = plan(&s, Strategy::ShortGpt, 0.2, FinetunePolicy::None);
        assert!(p.finetune.is_empty());
    }

    #[test]
    fn consecutive_block() {
        // L = 6, highest s_1 at 3. n = 2: drop 3,4, tune 5 (next two clipped at 6).
        let s = SimilarityScores::from_means(6, vec![vec![0.1, 0.2, 0.3, 0.9, 0.4]]).unwrap();
        let p = plan(&s, Strategy::Consecutive, 0.34, FinetunePolicy::Paired);
        assert_eq!(sets(&p)[..2], [vec![3, 4], vec![5]]);
        // n = 3: 3,4,5 fits exactly; nothing after it to tune.
        let p = plan(&s, Strategy::Consecutive, 0.5, FinetunePolicy::Paired);
        assert_eq!(sets(&p)[..2], [vec![3, 4, 5], vec![]]);
        // Highest at 4, n = 3: 4..=6 does not fit, shifted to 3,4,5.
        let s = SimilarityScores::from_means(6, vec![vec![0.1, 0.2, 0.3, 0.4, 0.9]]).unwrap();
        let p = plan(&s, Strategy::Consecutive, 0.5, FinetunePolicy::Paired);
        assert_eq!(p.drop, vec![3, 4, 5]);
        // Highest at 0 (tie with 4 → lowest index), n = 2: drop 0,1, tune 2,3; Next: 2.
        let s = SimilarityScores::from_means(6, vec![vec![0.9, 0.2, 0.3, 0.4, 0.9]]).unwrap();
        let p = plan(&s, Strategy::Consecutive, 0.34, FinetunePolicy::Paired);
        assert_eq!(sets(&p)[..2], [vec![0, 1], vec![2, 3]]);
        let p = plan(&s, Strategy::Consecutive, 0.34, FinetunePolicy::Next);
        assert_eq!(p.finetune, vec![2]);
    }

    #[test]
    fn random_is_seeded_and_uniform() {
        let s = table_a();
        let opts = |seed| SelectOptions {
            seed,
            finetune: FinetunePolicy::Paired,
        };
        let a = select(&s, Strategy::Random, 0.375, &opts(7)).unwrap();
        let b = select(&s, Strategy::Random, 0.375, &opts(7)).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.drop.len(), 3);
        assert!(a.drop.windows(2).all(|w| w[0] < w[1]) && a.drop.iter().all(|&d| d < 8));
        let differs = (0..20).any(|seed| {
            select(&s, Strategy::Random, 0.375, &opts(seed))
                .unwrap()
                .drop
                != a.drop
        });
        assert!(differs);
        // Each layer, the last one included, is dropped about n/L of the time.
        let (l, n, trials) = (10usize, 3usize, 4000u64);
        let mut counts = vec![0u32; l];
        for seed in 0..trials {
            for d in random(l, n, seed).unwrap().drop {
                counts[d] += 1;
            }
        }
        // Expected 1200 each, standard deviation ≈ 29.
        assert!(
            counts.iter().all(|&c| (1050..=1350).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn splitmix64_reference_values() {
        // Published outputs of Vigna's splitmix64.c for seed 0.
        let mut r = crate::rng::SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(r.next_u64(), 0x06C4_5D18_8009_454F);
        let mut r = crate::rng::SplitMix64::new(1);
        assert!((0..1000).all(|_| r.below(3) < 3));
        let mut v: Vec<u32> = (0..50).collect();
        r.shuffle(&mut v);
        v.sort_unstable();
        assert_eq!(v, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn names_and_errors() {
        use clap::ValueEnum;
        let names: Vec<String> = Strategy::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(
            names,
            [
                "interlace",
                "interlace-oa",
                "interlace-tn",
                "random",
                "consecutive",
                "shortgpt",
                "sleb"
            ]
        );
        assert_eq!(Strategy::value_variants(), Strategy::ALL);
        for st in Strategy::ALL {
            assert_eq!(Strategy::from_str(&st.name(), false).unwrap(), st);
        }
        assert!(Strategy::from_str("lasso", false).is_err());
        let names: Vec<String> = FinetunePolicy::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(names, ["paired", "next", "all", "none"]);
        assert_eq!(FinetunePolicy::value_variants(), FinetunePolicy::ALL);
        for p in FinetunePolicy::ALL {
            assert_eq!(FinetunePolicy::from_str(&p.name(), false).unwrap(), p);
        }
        assert!(FinetunePolicy::from_str("some", false).is_err());
        assert!(err(&table_a(), Strategy::Interlace, 1.0).contains("outside [0, 1)"));
        assert!(err(&table_a(), Strategy::Interlace, -0.25).contains("outside [0, 1)"));
        assert!(err(&table_a(), Strategy::Sleb, 0.25).contains("sleb needs a model"));
        let only1 = SimilarityScores::from_means(8, vec![vec![0.5; 7]]).unwrap();
        let e = err(&only1, Strategy::Interlace, 0.25);
        assert!(e.contains("interlace needs similarity pack 2 (s_2)"), "{e}");
        // L = 3 without a pack 3 (it could have no start index anyway) still works.
        let l3 = SimilarityScores::from_means(3, vec![vec![0.7, 0.9], vec![0.6]]).unwrap();
        let p = select(&l3, Strategy::Interlace, 0.34, &SelectOptions::default()).unwrap();
        assert_eq!(p.drop, vec![1]);
        assert!(select(&only1, Strategy::ShortGpt, 0.25, &SelectOptions::default()).is_ok());
    }

    #[test]
    fn from_drops_for_external_strategies() {
        // A sleb-like drop set {5, 2} of 8 layers. Paired → Next: 3 (after 2), 6 (after 5).
        let p = Plan::from_drops("sleb", 0.25, 8, vec![5, 2], FinetunePolicy::Paired).unwrap();
        assert_eq!(
            sets(&p),
            [
                vec![2, 5],
                vec![3, 6],
                vec![],
                vec![0, 1, 3, 4, 6, 7],
                vec![0, 1, 4, 7]
            ]
        );
        assert_eq!(p.strategy, "sleb");
        // A dropped tail has no next kept layer; adjacent drops share one.
        let p = Plan::from_drops("sleb", 0.375, 8, vec![7, 3, 4], FinetunePolicy::Next).unwrap();
        assert_eq!(p.finetune, vec![5]);
        assert!(Plan::from_drops("sleb", 0.25, 8, vec![8], FinetunePolicy::Next).is_err());
        assert!(Plan::from_drops("sleb", 0.25, 8, vec![1, 1], FinetunePolicy::Next).is_err());
        assert!(Plan::from_drops("sleb", 1.0, 8, vec![1], FinetunePolicy::Next).is_err());
    }
}
