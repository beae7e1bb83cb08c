//! How sure a comparison of models on benchmarks is: 95 % bootstrap intervals over the
//! benchmark rows and the seeds, and a paired approximate randomization test.
//!
//! Every benchmark score here is a function of per-unit counts that add up (a unit is a row,
//! or a question of a circular benchmark): the mean of the units' scores, or POPE's F1 over
//! yes/no answers ([`Aggregate`]). A method that ran with several seeds pools its runs'
//! counts, so its score is the mean of its runs' scores where the score is a mean, and the
//! F1 of all its runs' answers where it is F1. Every method answered the same units, which
//! is what makes the intervals and the test paired: a bootstrap replicate draws the same
//! units (and the same seeds) for every method.

use crate::rng::SplitMix64;

/// How a benchmark's score (in percent) follows from the summed counts of its units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// Counts `[score, 1, 0, 0]` per scored unit (`[0; 4]` for one not scored): the mean
    /// score of the scored units.
    Mean,
    /// Counts `[true positives, false positives, false negatives, answers]` with "yes" as
    /// the positive class: F1 (0 where precision and recall are 0; none without answers).
    F1,
}

/// One unit's additive counts (see [`Aggregate`]).
pub type Counts = [f64; 4];

fn add(a: &mut Counts, b: &Counts, w: f64) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += w * y;
    }
}

impl Aggregate {
    /// The score, in percent, of summed counts; `None` when nothing was scored.
    pub fn score(self, c: &Counts) -> Option<f64> {
        match self {
            Aggregate::Mean => (c[1] > 0.0).then(|| c[0] / c[1] * 100.0),
            Aggregate::F1 => {
                if c[3] <= 0.0 {
                    return None;
                }
                let ratio = |a: f64, b: f64| if b == 0.0 { 0.0 } else { a / b };
                let p = ratio(c[0], c[0] + c[1]);
                let r = ratio(c[0], c[0] + c[2]);
                Some(if p + r == 0.0 {
                    0.0
                } else {
                    2.0 * p * r / (p + r) * 100.0
                })
            }
        }
    }
}

/// The benchmarks of a comparison and every method's counts on them.
#[derive(Debug, Clone)]
pub struct Design {
    /// Each benchmark's name and aggregate.
    pub benches: Vec<(String, Aggregate)>,
    pub methods: Vec<Method>,
}

/// One method: `runs[seed][bench][unit]`. Every method has the same units per benchmark;
/// a method has one run or as many as the most any method has (its seeds, paired with the
/// other methods' by position).
#[derive(Debug, Clone)]
pub struct Method {
    pub name: String,
    pub runs: Vec<Vec<Vec<Counts>>>,
}

/// An estimate with its 95 % interval (2.5th and 97.5th percentiles of the bootstrap).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
}

/// One method's scores and retention with their intervals.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Per benchmark, percent.
    pub scores: Vec<Option<Interval>>,
    /// Mean over benchmarks of score ÷ the reference's score, for each reference given to
    /// [`bootstrap`] (fractions: 1.0 is 100 %).
    pub relative: Vec<Option<Interval>>,
}

/// Result of [`paired_test`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedTest {
    /// Relative performance of `a` minus that of `b` (fractions), against the reference.
    pub difference: f64,
    /// Two-sided p-value.
    pub p: f64,
}

impl Design {
    /// Checks the shapes: same units per benchmark in every run, one run or the most.
    pub fn check(&self) -> anyhow::Result<usize> {
        let seeds = self.methods.iter().map(|m| m.runs.len()).max().unwrap_or(0);
        let units: Option<Vec<usize>> = self
            .methods
            .first()
            .and_then(|m| m.runs.first())
            .map(|r| r.iter().map(Vec::len).collect());
        for m in &self.methods {
            if m.runs.len() != 1 && m.runs.len() != seeds {
                anyhow::bail!(
                    "{}: {} runs, where the others have 1 or {seeds}",
                    m.name,
                    m.runs.len()
                );
            }
            for run in &m.runs {
                let u: Vec<usize> = run.iter().map(Vec::len).collect();
                if run.len() != self.benches.len() || Some(&u) != units.as_ref() {
                    anyhow::bail!(
                        "{}: its runs answered other units than the first method's",
                        m.name
                    );
                }
            }
        }
        Ok(seeds)
    }

    /// Method `m`'s scores with unit multiplicities `weights[bench][unit]` (None: each
    /// once) and its runs picked by `picks` (indices into the runs; a one-run method uses
    /// its run for every pick).
    fn scores(&self, m: usize, weights: Option<&[Vec<f64>]>, picks: &[usize]) -> Vec<Option<f64>> {
        let method = &self.methods[m];
        self.benches
            .iter()
            .enumerate()
            .map(|(b, (_, agg))| {
                let mut sum = [0.0; 4];
                for &p in picks {
                    let run = &method.runs[if method.runs.len() == 1 { 0 } else { p }][b];
                    match weights {
                        Some(w) => {
                            for (c, &wu) in run.iter().zip(&w[b]) {
                                if wu != 0.0 {
                                    add(&mut sum, c, wu);
                                }
                            }
                        }
                        None => run.iter().for_each(|c| add(&mut sum, c, 1.0)),
                    }
                }
                agg.score(&sum)
            })
            .collect()
    }

    /// Method `m`'s counts per benchmark and unit, averaged over its runs.
    fn pooled(&self, m: usize) -> Vec<Vec<Counts>> {
        let runs = &self.methods[m].runs;
        let n = runs.len() as f64;
        (0..self.benches.len())
            .map(|b| {
                (0..runs[0][b].len())
                    .map(|u| {
                        let mut c = [0.0; 4];
                        runs.iter().for_each(|r| add(&mut c, &r[b][u], 1.0 / n));
                        c
                    })
                    .collect()
            })
            .collect()
    }
}

/// Mean over benchmarks of `scores[b] ÷ reference[b]`, over the benchmarks that both have
/// with a positive reference (as [`crate::eval::report::relative_performance`]).
pub fn relative(scores: &[Option<f64>], reference: &[Option<f64>]) -> Option<f64> {
    let ratios: Vec<f64> = scores
        .iter()
        .zip(reference)
        .filter_map(|(s, r)| match (s, r) {
            (Some(s), Some(r)) if *r > 0.0 => Some(s / r),
            _ => None,
        })
        .collect();
    (!ratios.is_empty()).then(|| ratios.iter().sum::<f64>() / ratios.len() as f64)
}

/// The q-quantile of sorted values, interpolated linearly between order statistics (numpy's
/// default).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

fn interval(estimate: Option<f64>, mut draws: Vec<f64>) -> Option<Interval> {
    let estimate = estimate?;
    if draws.is_empty() {
        return None;
    }
    draws.sort_by(f64::total_cmp);
    Some(Interval {
        estimate,
        low: quantile(&draws, 0.025),
        high: quantile(&draws, 0.975),
    })
}

/// Every method's scores and its relative performance against each method of `references`
/// (indices), with percentile intervals from `replicates` bootstrap draws. A draw takes each
/// benchmark's units with replacement (the same units for every method) and the seeds with
/// replacement (the same seeds for every method that has several).
pub fn bootstrap(
    design: &Design,
    references: &[usize],
    replicates: usize,
    seed: u64,
) -> anyhow::Result<Vec<Summary>> {
    let seeds = design.check()?;
    let all: Vec<usize> = (0..seeds).collect();
    let estimate: Vec<Vec<Option<f64>>> = (0..design.methods.len())
        .map(|m| design.scores(m, None, &all))
        .collect();
    let units: Vec<usize> = design.methods[0].runs[0].iter().map(Vec::len).collect();
    let nm = design.methods.len();
    let nb = design.benches.len();
    let mut score_draws = vec![vec![Vec::with_capacity(replicates); nb]; nm];
    let mut rel_draws = vec![vec![Vec::with_capacity(replicates); references.len()]; nm];
    let mut rng = SplitMix64::new(seed);
    let mut weights: Vec<Vec<f64>> = units.iter().map(|&n| vec![0.0; n]).collect();
    for _ in 0..replicates {
        for (w, &n) in weights.iter_mut().zip(&units) {
            w.iter_mut().for_each(|x| *x = 0.0);
            for _ in 0..n {
                w[rng.below(n as u64) as usize] += 1.0;
            }
        }
        let picks: Vec<usize> = (0..seeds)
            .map(|_| rng.below(seeds as u64) as usize)
            .collect();
        let scores: Vec<Vec<Option<f64>>> = (0..nm)
            .map(|m| design.scores(m, Some(&weights), &picks))
            .collect();
        for m in 0..nm {
            for (b, s) in scores[m].iter().enumerate() {
                if let Some(s) = s {
                    score_draws[m][b].push(*s);
                }
            }
            for (k, &r) in references.iter().enumerate() {
                if let Some(x) = relative(&scores[m], &scores[r]) {
                    rel_draws[m][k].push(x);
                }
            }
        }
    }
    Ok((0..nm)
        .map(|m| Summary {
            scores: (0..nb)
                .map(|b| interval(estimate[m][b], std::mem::take(&mut score_draws[m][b])))
                .collect(),
            relative: references
                .iter()
                .enumerate()
                .map(|(k, &r)| {
                    interval(
                        relative(&estimate[m], &estimate[r]),
                        std::mem::take(&mut rel_draws[m][k]),
                    )
                })
                .collect(),
        })
        .collect())
}

/// Paired approximate randomization test (Noreen 1989) of methods `a` and `b`: the
/// statistic is their difference in relative performance against `reference` (which may be
/// one of them); each of `permutations` draws swaps the two methods' answers on every unit
/// with probability 1/2 (the runs of a method with several seeds pooled per unit), and the
/// p-value is (1 + draws at least as extreme) ÷ (1 + draws), two-sided.
pub fn paired_test(
    design: &Design,
    (a, b, reference): (usize, usize, usize),
    permutations: usize,
    seed: u64,
) -> anyhow::Result<Option<PairedTest>> {
    design.check()?;
    let (pa, pb) = (design.pooled(a), design.pooled(b));
    let pr = design.pooled(reference);
    let sums = |p: &[Vec<Counts>]| -> Vec<Counts> {
        p.iter()
            .map(|units| {
                let mut s = [0.0; 4];
                units.iter().for_each(|c| add(&mut s, c, 1.0));
                s
            })
            .collect()
    };
    let (sa, sb, sr) = (sums(&pa), sums(&pb), sums(&pr));
    // Only the units where the two differ change anything when swapped.
    let deltas: Vec<Vec<Counts>> = pa
        .iter()
        .zip(&pb)
        .map(|(ua, ub)| {
            ua.iter()
                .zip(ub)
                .filter(|(x, y)| x != y)
                .map(|(x, y)| [y[0] - x[0], y[1] - x[1], y[2] - x[2], y[3] - x[3]])
                .collect()
        })
        .collect();
    let statistic = |sa: &[Counts], sb: &[Counts]| -> Option<f64> {
        let score = |s: &[Counts]| -> Vec<Option<f64>> {
            s.iter()
                .zip(&design.benches)
                .map(|(c, (_, agg))| agg.score(c))
                .collect()
        };
        let (xa, xb) = (score(sa), score(sb));
        let xr = if reference == a {
            xa.clone()
        } else if reference == b {
            xb.clone()
        } else {
            score(&sr)
        };
        Some(relative(&xa, &xr)? - relative(&xb, &xr)?)
    };
    let Some(observed) = statistic(&sa, &sb) else {
        return Ok(None);
    };
    let mut rng = SplitMix64::new(seed);
    let mut extreme = 0usize;
    let (mut ta, mut tb) = (sa.clone(), sb.clone());
    for _ in 0..permutations {
        ta.clone_from(&sa);
        tb.clone_from(&sb);
        for (bench, ds) in deltas.iter().enumerate() {
            for d in ds {
                if rng.next_u64() >> 63 == 1 {
                    add(&mut ta[bench], d, 1.0);
                    add(&mut tb[bench], d, -1.0);
                }
            }
        }
        if let Some(t) = statistic(&ta, &tb) {
            if t.abs() >= observed.abs() - 1e-12 {
                extreme += 1;
            }
        }
    }
    Ok(Some(PairedTest {
        difference: observed,
        p: (1 + extreme) as f64 / (1 + permutations) as f64,
    }))
}

/// Holm's step-down adjustment of p-values for testing them together (each adjusted value
/// is at least the one before it in ascending order, at most 1).
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| p[i].total_cmp(&p[j]));
    let mut adjusted = vec![0.0; m];
    let mut running: f64 = 0.0;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One benchmark of `Mean` units with these scores.
    fn run(scores: &[f64]) -> Vec<Vec<Counts>> {
        vec![scores.iter().map(|&s| [s, 1.0, 0.0, 0.0]).collect()]
    }

    fn design(methods: Vec<(&str, Vec<Vec<Vec<Counts>>>)>) -> Design {
        Design {
            benches: vec![("B".into(), Aggregate::Mean)],
            methods: methods
                .into_iter()
                .map(|(name, runs)| Method {
                    name: name.into(),
                    runs,
                })
                .collect(),
        }
    }

    #[test]
    fn aggregates_follow_their_definitions() {
        assert_eq!(Aggregate::Mean.score(&[3.0, 4.0, 0.0, 0.0]), Some(75.0));
        assert_eq!(Aggregate::Mean.score(&[0.0; 4]), None);
        // tp 3, fp 1, fn 2: precision 3/4, recall 3/5, F1 2·(3/4)(3/5)/(3/4 + 3/5) = 2/3.
        let f1 = Aggregate::F1.score(&[3.0, 1.0, 2.0, 10.0]).unwrap();
        assert!((f1 - 200.0 / 3.0).abs() < 1e-12, "{f1}");
        // Answers but no positive prediction or truth: F1 0 (cal_f1_score's convention).
        assert_eq!(Aggregate::F1.score(&[0.0, 0.0, 0.0, 5.0]), Some(0.0));
        assert_eq!(Aggregate::F1.score(&[0.0; 4]), None);
    }

    /// Holm (1979) on four p-values, worked by hand: sorted 0.005, 0.01, 0.03, 0.04 times
    /// 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04, made non-decreasing: 0.02, 0.03, 0.06, 0.06.
    #[test]
    fn holm_adjustment_by_hand() {
        let got = holm(&[0.01, 0.04, 0.03, 0.005]);
        let want = [0.03, 0.06, 0.06, 0.02];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
        assert_eq!(holm(&[0.6, 0.9]), vec![1.0, 1.0]);
    }

    /// The randomization test against the exact sign-test distribution: rows where the two
    /// methods agree never matter; on the k rows where they differ, each draw flips a fair
    /// coin, so P(|sum of k signs| ≥ |observed|) is a binomial tail.
    #[test]
    fn paired_test_matches_the_exact_binomial_tail() {
        // 50 rows; the reference answers all of them.
        let dense = run(&[1.0; 50]);
        // A beats B on 6 rows, B beats A on `b_wins` rows, both right on 20, both wrong on
        // the rest.
        let case = |b_wins: usize| {
            let mut a = vec![0.0; 50];
            let mut b = vec![0.0; 50];
            for i in 0..20 {
                a[i] = 1.0;
                b[i] = 1.0;
            }
            for x in a.iter_mut().skip(20).take(6) {
                *x = 1.0;
            }
            for x in b.iter_mut().skip(26).take(b_wins) {
                *x = 1.0;
            }
            design(vec![
                ("Dense", vec![dense.clone()]),
                ("A", vec![run(&a)]),
                ("B", vec![run(&b)]),
            ])
        };
        // 6 against 0: all 6 signs alike, 2 of 2^6 draws: p = 2/64.
        // 6 against 2: |sum of 8 signs| >= 4 when at most 2 or at least 6 are +1:
        // 2·(1 + 8 + 28) / 256 = 74/256.
        for (b_wins, exact, diff) in [(0, 2.0 / 64.0, 6.0 / 50.0), (2, 74.0 / 256.0, 4.0 / 50.0)] {
            let t = paired_test(&case(b_wins), (1, 2, 0), 20_000, 7)
                .unwrap()
                .unwrap();
            assert!((t.difference - diff).abs() < 1e-12, "{t:?}");
            // Monte Carlo error: sd sqrt(p(1-p)/20000) is at most 0.0033.
            assert!(
                (t.p - exact).abs() < 0.012,
                "b_wins {b_wins}: p {} vs exact {exact}",
                t.p
            );
        }
        // Identical methods: difference 0 and p 1.
        let same = case(0);
        let t = paired_test(&same, (1, 1, 0), 1000, 7).unwrap().unwrap();
        assert_eq!((t.difference, t.p), (0.0, 1.0));
    }

    /// Rows only: the bootstrap distribution of a mean of n Bernoulli(p) rows has standard
    /// deviation sqrt(p(1-p)/n), so the percentile interval is close to the normal one,
    /// p ± 1.96·sqrt(p(1-p)/n): 30 ± 4.49 points for p = 0.3, n = 400.
    #[test]
    fn row_bootstrap_interval_matches_the_normal_approximation() {
        let scores: Vec<f64> = (0..400).map(|i| f64::from(u8::from(i % 10 < 3))).collect();
        let d = design(vec![("M", vec![run(&scores)])]);
        let s = bootstrap(&d, &[0], 4000, 11).unwrap();
        let i = s[0].scores[0].unwrap();
        assert!((i.estimate - 30.0).abs() < 1e-9);
        let half = 1.96 * (0.3f64 * 0.7 / 400.0).sqrt() * 100.0;
        assert!((i.low - (30.0 - half)).abs() < 0.8, "{i:?}");
        assert!((i.high - (30.0 + half)).abs() < 0.8, "{i:?}");
        // Relative to itself: exactly 1 in every draw.
        let r = s[0].relative[0].unwrap();
        assert_eq!((r.estimate, r.low, r.high), (1.0, 1.0, 1.0));
    }

    /// Seeds only: every row of seed k scores 0.2, 0.3, 0.4, so the rows add no spread and a
    /// draw's score is the mean of 3 seeds drawn from {20, 30, 40}. Its extremes, 20 and 40,
    /// each have probability 1/27 > 2.5 %, so they are the interval's ends; against a
    /// reference scoring 50, the relative interval is 0.4 to 0.8 around 0.6.
    #[test]
    fn seed_bootstrap_interval_is_the_exact_extremes() {
        let runs: Vec<Vec<Vec<Counts>>> = [0.2, 0.3, 0.4].iter().map(|&s| run(&[s; 30])).collect();
        let d = design(vec![("Ref", vec![run(&[0.5; 30])]), ("M", runs)]);
        let s = bootstrap(&d, &[0], 4000, 3).unwrap();
        let i = s[1].scores[0].unwrap();
        assert!(
            (i.estimate - 30.0).abs() < 1e-9
                && (i.low - 20.0).abs() < 1e-9
                && (i.high - 40.0).abs() < 1e-9,
            "{i:?}"
        );
        let r = s[1].relative[0].unwrap();
        assert!(
            (r.estimate - 0.6).abs() < 1e-12
                && (r.low - 0.4).abs() < 1e-12
                && (r.high - 0.8).abs() < 1e-12,
            "{r:?}"
        );
        // The one-run reference has no seed spread and no row spread.
        let i = s[0].scores[0].unwrap();
        assert_eq!((i.low, i.high), (50.0, 50.0));
    }

    #[test]
    fn mismatched_runs_are_refused() {
        let d = design(vec![
            ("A", vec![run(&[1.0; 3]), run(&[1.0; 3])]),
            ("B", vec![run(&[1.0; 3]); 3]),
        ]);
        assert!(bootstrap(&d, &[0], 10, 1).is_err());
        let d = design(vec![
            ("A", vec![run(&[1.0; 3])]),
            ("B", vec![run(&[1.0; 4])]),
        ]);
        assert!(paired_test(&d, (0, 1, 0), 10, 1).is_err());
    }

    #[test]
    fn quantile_interpolates_like_numpy() {
        // numpy.quantile([1, 2, 3, 4], 0.25) = 1.75, 0.975 → 3.925.
        assert!((quantile(&[1.0, 2.0, 3.0, 4.0], 0.25) - 1.75).abs() < 1e-12);
        assert!((quantile(&[1.0, 2.0, 3.0, 4.0], 0.975) - 3.925).abs() < 1e-12);
    }
}
