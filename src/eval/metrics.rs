//! Rule-based scoring of benchmark answers, as VLMEvalKit scores them without an LLM judge
//! (its "exact_matching" mode). Every function is pure: a prediction and the reference(s) in,
//! a verdict out. Sources (open-compass/VLMEvalKit):
//!
//! - multiple choice: `vlmeval/utils/matching_util.py` (`can_infer_option`,
//!   `can_infer_text`, `can_infer`) and `vlmeval/dataset/utils/multiple_choice.py`
//!   (`extract_answer_from_item`: no option found means option "Z", i.e. wrong);
//! - yes/no: `vlmeval/dataset/utils/yorn.py` (`YOrN_Extraction`, `POPE_rating`);
//! - open VQA: `vlmeval/dataset/utils/vqa_eval.py` (`process_answer`, `process_line` with
//!   `vqa_score`, `relaxed_correctness`) and `vlmeval/smp/misc.py` (`process_punctuation`);
//! - OCRBench: `vlmeval/dataset/image_vqa.py` (`OCRBench.evaluate`);
//! - counting: `vlmeval/dataset/image_vqa.py` (`CountBenchQA.evaluate`: the answer is a
//!   substring of the prediction), [`count_correct_vlmevalkit`]. [`count_correct`] is our
//!   stricter rule (task `count-number`): the first number in the prediction (digits or an
//!   English number word) equals the reference number.
//!
//! `tests/vlmevalkit_rules.rs` checks the multiple-choice extraction, the counting rule and
//! POPE's rating against VLMEvalKit's own functions (`tools/make_vlmevalkit_fixtures.py`).

use std::collections::HashMap;
use std::sync::OnceLock;

/// Answers VLMEvalKit treats as refusals: `can_infer_option` returns "Z" for them.
const REJECT_TO_ANSWER: [&str; 4] = [
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
];

/// VLMEvalKit's `can_infer_option`: the option letter named in `answer`.
///
/// The characters `.()[],:;!*#{}` become spaces and the text is split on whitespace. If
/// exactly one of the option letters is a word and it is among the last four words, that
/// letter is the answer; if none is and "Z" is a word, or the answer is a known refusal, the
/// answer is "Z" (no option). Otherwise the first "(correct) answer is X" (any case, X one of
/// A-D, optionally in `**`) names the option, when X is one of the choices.
pub fn can_infer_option(answer: &str, choices: &[(char, String)]) -> Option<char> {
    if answer.contains("Failed to obtain answer via API") {
        return None;
    }
    if REJECT_TO_ANSWER.iter().any(|r| answer.contains(r)) {
        return Some('Z');
    }
    let modified: String = answer
        .chars()
        .map(|c| if ".()[],:;!*#{}".contains(c) { ' ' } else { c })
        .collect();
    let words: Vec<&str> = modified.split_whitespace().collect();
    let is_word = |c: char| {
        let mut buf = [0u8; 4];
        let s: &str = c.encode_utf8(&mut buf);
        words.contains(&s)
    };
    let named: Vec<char> = choices
        .iter()
        .map(|(c, _)| *c)
        .filter(|&c| is_word(c))
        .collect();
    match named.len() {
        1 => {
            // Python: splits.index(ch) > len(splits) - 5.
            let s = named[0].to_string();
            let first = words.iter().position(|w| *w == s).unwrap_or(0);
            if first as isize > words.len() as isize - 5 {
                return Some(named[0]);
            }
        }
        0 if is_word('Z') => return Some('Z'),
        _ => {}
    }
    verbose_answer(answer).filter(|c| choices.iter().any(|(k, _)| k == c))
}

/// Python's `str.isspace` (what `\s` matches in a `str` pattern): Unicode whitespace plus the
/// ASCII separators 0x1C-0x1F.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// VLMEvalKit's `_VERBOSE_ANSWER_RE`, `(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**`,
/// searched in `answer`: the letter (upper-cased) of the first match.
fn verbose_answer(answer: &str) -> Option<char> {
    let chars: Vec<char> = answer.chars().collect();
    let word_at = |i: usize, w: &str| -> Option<usize> {
        let mut j = i;
        for wc in w.chars() {
            let c = *chars.get(j)?;
            if c.to_lowercase().ne(std::iter::once(wc)) {
                return None;
            }
            j += 1;
        }
        Some(j)
    };
    let spaces = |i: usize| -> Option<usize> {
        let n = chars[i..].iter().take_while(|&&c| py_space(c)).count();
        (n > 0).then_some(i + n)
    };
    (0..chars.len()).find_map(|i| {
        let j = word_at(i, "answer")?;
        let j = spaces(j)?;
        let j = word_at(j, "is")?;
        let mut j = spaces(j)?;
        while chars.get(j) == Some(&'*') {
            j += 1;
        }
        let c = chars.get(j)?.to_ascii_uppercase();
        ('A'..='D').contains(&c).then_some(c)
    })
}

/// VLMEvalKit's `can_infer_text`: the option whose text (lower-cased) occurs in the
/// lower-cased answer, if exactly one does; nothing when the answer is longer than twice
/// the options' texts together (in characters).
pub fn can_infer_text(answer: &str, choices: &[(char, String)]) -> Option<char> {
    let answer = answer.to_lowercase();
    let total: usize = choices.iter().map(|(_, t)| t.chars().count()).sum();
    if answer.chars().count() > 2 * total {
        return None;
    }
    let found: Vec<char> = choices
        .iter()
        .filter(|(_, text)| answer.contains(&text.to_lowercase()))
        .map(|(c, _)| *c)
        .collect();
    (found.len() == 1).then(|| found[0])
}

/// VLMEvalKit's `can_infer`: the option letter, else the option text. `None` means nothing
/// could be inferred, which VLMEvalKit's exact matching scores as option "Z" (wrong).
pub fn can_infer(answer: &str, choices: &[(char, String)]) -> Option<char> {
    can_infer_option(answer, choices).or_else(|| can_infer_text(answer, choices))
}

/// Whether a multiple-choice prediction is right: the inferred option equals `answer`.
pub fn mcq_correct(prediction: &str, choices: &[(char, String)], answer: char) -> bool {
    can_infer(prediction.trim(), choices) == Some(answer)
}

/// A yes/no answer as VLMEvalKit extracts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum YesNo {
    Yes,
    No,
    Unknown,
}

impl YesNo {
    pub fn as_str(self) -> &'static str {
        match self {
            YesNo::Yes => "Yes",
            YesNo::No => "No",
            YesNo::Unknown => "Unknown",
        }
    }

    /// A reference answer: "yes" or "no" in any case, surrounding whitespace ignored.
    pub fn parse_reference(s: &str) -> Option<YesNo> {
        match s.trim().to_lowercase().as_str() {
            "yes" => Some(YesNo::Yes),
            "no" => Some(YesNo::No),
            _ => None,
        }
    }
}

/// VLMEvalKit's `YOrN_Extraction`: lower-case, [`process_punctuation`], split into words;
/// "Yes" if "yes" is a word and "no" is not, "No" for the opposite, else "Unknown".
pub fn yorn_extraction(output: &str) -> YesNo {
    let s = process_punctuation(&output.to_lowercase());
    let words: Vec<&str> = s.split_whitespace().collect();
    match (words.contains(&"yes"), words.contains(&"no")) {
        (true, false) => YesNo::Yes,
        (false, true) => YesNo::No,
        _ => YesNo::Unknown,
    }
}

/// Binary classification metrics of yes/no answers with "yes" as the positive class
/// (VLMEvalKit's `POPE_rating`; an "Unknown" extraction counts as a "no" prediction for
/// precision and recall and as wrong for accuracy). All values are fractions in [0, 1];
/// precision, recall or F1 is 0 where its denominator is 0, as in `cal_f1_score`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct YesNoMetrics {
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// [`YesNoMetrics`] over (reference, extracted prediction) pairs; `None` when there are none.
pub fn yes_no_metrics(pairs: &[(YesNo, YesNo)]) -> Option<YesNoMetrics> {
    if pairs.is_empty() {
        return None;
    }
    let (mut tp, mut fp, mut fn_, mut right) = (0usize, 0usize, 0usize, 0usize);
    for &(truth, pred) in pairs {
        let (t, p) = (truth == YesNo::Yes, pred == YesNo::Yes);
        match (t, p) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            (true, false) => fn_ += 1,
            (false, false) => {}
        }
        if truth == pred {
            right += 1;
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let precision = ratio(tp, tp + fp);
    let recall = ratio(tp, tp + fn_);
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    Some(YesNoMetrics {
        accuracy: right as f64 / pairs.len() as f64,
        precision,
        recall,
        f1,
    })
}

/// Punctuation handled by [`process_punctuation`], in VLMEvalKit's order.
const PUNCT: [char; 21] = [
    ';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`', ',',
    '?', '!',
];

/// VLMEvalKit's `process_punctuation` (from the official VQA evaluation): each mark in
/// `; / [ ] " { } ( ) = + \ _ - > < @ ` , ? !` is deleted if it touches a space anywhere in
/// the text (or if the text has a comma between digits, "1,000"), else replaced by a space;
/// then periods not between digits are deleted.
///
/// Faithful details: the touch-a-space test looks at the original text, not the text being
/// rewritten; the period rule is `(?<!\d)\.(?!\d)` and, because `re.UNICODE` (32) is passed
/// where Python's `Pattern.sub` takes its `count`, at most 32 periods are deleted.
pub fn process_punctuation(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let digit_comma_digit = chars
        .windows(3)
        .any(|w| w[0].is_ascii_digit() && w[1] == ',' && w[2].is_ascii_digit());
    let mut out = text.to_string();
    for p in PUNCT {
        let touches_space = text.contains(&format!("{p} ")) || text.contains(&format!(" {p}"));
        if touches_space || digit_comma_digit {
            out = out.replace(p, "");
        } else {
            out = out.replace(p, " ");
        }
    }
    strip_periods(&out, 32)
}

/// Deletes up to `max` periods that are neither preceded nor followed by a digit
/// (`re.sub(r'(?<!\d)\.(?!\d)', '', text, count=max)`; the neighbours are those of the
/// original text).
fn strip_periods(text: &str, max: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut removed = 0;
    for (i, &c) in chars.iter().enumerate() {
        if c == '.' && removed < max {
            let before = i > 0 && chars[i - 1].is_ascii_digit();
            let after = chars.get(i + 1).is_some_and(|n| n.is_ascii_digit());
            if !before && !after {
                removed += 1;
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// Number words the VQA normalisation turns into digits.
const MANUAL_MAP: [(&str, &str); 12] = [
    ("none", "0"),
    ("zero", "0"),
    ("one", "1"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
    ("ten", "10"),
];

const ARTICLES: [&str; 3] = ["a", "an", "the"];

/// The contraction table of the official VQA evaluation (as in VLMEvalKit's
/// `_process_digit_article`): words written without an apostrophe get it back.
const CONTRACTIONS: &[(&str, &str)] = &[
    ("aint", "ain't"),
    ("arent", "aren't"),
    ("cant", "can't"),
    ("couldve", "could've"),
    ("couldnt", "couldn't"),
    ("couldn'tve", "couldn't've"),
    ("couldnt've", "couldn't've"),
    ("didnt", "didn't"),
    ("doesnt", "doesn't"),
    ("dont", "don't"),
    ("hadnt", "hadn't"),
    ("hadnt've", "hadn't've"),
    ("hadn'tve", "hadn't've"),
    ("hasnt", "hasn't"),
    ("havent", "haven't"),
    ("hed", "he'd"),
    ("hed've", "he'd've"),
    ("he'dve", "he'd've"),
    ("hes", "he's"),
    ("howd", "how'd"),
    ("howll", "how'll"),
    ("hows", "how's"),
    ("Id've", "I'd've"),
    ("I'dve", "I'd've"),
    ("Im", "I'm"),
    ("Ive", "I've"),
    ("isnt", "isn't"),
    ("itd", "it'd"),
    ("itd've", "it'd've"),
    ("it'dve", "it'd've"),
    ("itll", "it'll"),
    ("let's", "let's"),
    ("maam", "ma'am"),
    ("mightnt", "mightn't"),
    ("mightnt've", "mightn't've"),
    ("mightn'tve", "mightn't've"),
    ("mightve", "might've"),
    ("mustnt", "mustn't"),
    ("mustve", "must've"),
    ("neednt", "needn't"),
    ("notve", "not've"),
    ("oclock", "o'clock"),
    ("oughtnt", "oughtn't"),
    ("ow's'at", "'ow's'at"),
    ("'ows'at", "'ow's'at"),
    ("'ow'sat", "'ow's'at"),
    ("shant", "shan't"),
    ("shed've", "she'd've"),
    ("she'dve", "she'd've"),
    ("she's", "she's"),
    ("shouldve", "should've"),
    ("shouldnt", "shouldn't"),
    ("shouldnt've", "shouldn't've"),
    ("shouldn'tve", "shouldn't've"),
    ("somebody'd", "somebodyd"),
    ("somebodyd've", "somebody'd've"),
    ("somebody'dve", "somebody'd've"),
    ("somebodyll", "somebody'll"),
    ("somebodys", "somebody's"),
    ("someoned", "someone'd"),
    ("someoned've", "someone'd've"),
    ("someone'dve", "someone'd've"),
    ("someonell", "someone'll"),
    ("someones", "someone's"),
    ("somethingd", "something'd"),
    ("somethingd've", "something'd've"),
    ("something'dve", "something'd've"),
    ("somethingll", "something'll"),
    ("thats", "that's"),
    ("thered", "there'd"),
    ("thered've", "there'd've"),
    ("there'dve", "there'd've"),
    ("therere", "there're"),
    ("theres", "there's"),
    ("theyd", "they'd"),
    ("theyd've", "they'd've"),
    ("they'dve", "they'd've"),
    ("theyll", "they'll"),
    ("theyre", "they're"),
    ("theyve", "they've"),
    ("twas", "'twas"),
    ("wasnt", "wasn't"),
    ("wed've", "we'd've"),
    ("we'dve", "we'd've"),
    ("weve", "we've"),
    ("werent", "weren't"),
    ("whatll", "what'll"),
    ("whatre", "what're"),
    ("whats", "what's"),
    ("whatve", "what've"),
    ("whens", "when's"),
    ("whered", "where'd"),
    ("wheres", "where's"),
    ("whereve", "where've"),
    ("whod", "who'd"),
    ("whod've", "who'd've"),
    ("who'dve", "who'd've"),
    ("wholl", "who'll"),
    ("whos", "who's"),
    ("whove", "who've"),
    ("whyll", "why'll"),
    ("whyre", "why're"),
    ("whys", "why's"),
    ("wont", "won't"),
    ("wouldve", "would've"),
    ("wouldnt", "wouldn't"),
    ("wouldnt've", "wouldn't've"),
    ("wouldn'tve", "wouldn't've"),
    ("yall", "y'all"),
    ("yall'll", "y'all'll"),
    ("y'allll", "y'all'll"),
    ("yall'd've", "y'all'd've"),
    ("y'alld've", "y'all'd've"),
    ("y'all'dve", "y'all'd've"),
    ("youd", "you'd"),
    ("youd've", "you'd've"),
    ("you'dve", "you'd've"),
    ("youll", "you'll"),
    ("youre", "you're"),
    ("youve", "you've"),
];

fn contractions() -> &'static HashMap<&'static str, &'static str> {
    static MAP: OnceLock<HashMap<&'static str, &'static str>> = OnceLock::new();
    MAP.get_or_init(|| CONTRACTIONS.iter().copied().collect())
}

/// VLMEvalKit's `_process_digit_article`: lower-case, split into words, number words zero to
/// ten (and "none") become digits, articles are dropped, contractions get their apostrophe,
/// words joined by single spaces.
pub fn process_digit_article(text: &str) -> String {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split_whitespace()
        .map(|w| {
            MANUAL_MAP
                .iter()
                .find(|(k, _)| *k == w)
                .map(|(_, v)| *v)
                .unwrap_or(w)
        })
        .filter(|w| !ARTICLES.contains(w))
        .map(|w| contractions().get(w).copied().unwrap_or(w))
        .collect();
    words.join(" ")
}

/// VLMEvalKit's `process_answer`: the VQA answer normalisation (newlines and tabs to spaces,
/// trim, [`process_punctuation`], [`process_digit_article`]).
pub fn normalize_vqa_answer(answer: &str) -> String {
    let a = answer.replace(['\n', '\t'], " ");
    process_digit_article(&process_punctuation(a.trim()))
}

/// VQA accuracy of one prediction against the human answers, as the official VQA evaluation
/// (and VLMEvalKit's `vqa_score`) computes it: after normalisation, for each answer i,
/// acc_i = min(1, (number of *other* answers equal to the prediction) / 3); the score is
/// the mean of acc_i (min(1, matches/3) averaged over all leave-one-out subsets).
///
/// With a single reference VLMEvalKit's formula always gives 0 (no "other" answers); we
/// score that case as exact match after normalisation instead (1 or 0). With no reference
/// the score is 0.
pub fn vqa_score(prediction: &str, answers: &[String]) -> f64 {
    let pred = normalize_vqa_answer(prediction);
    let gts: Vec<String> = answers.iter().map(|a| normalize_vqa_answer(a)).collect();
    match gts.len() {
        0 => 0.0,
        1 => f64::from(u8::from(gts[0] == pred)),
        n => {
            let total: f64 = (0..n)
                .map(|i| {
                    let matches = gts
                        .iter()
                        .enumerate()
                        .filter(|&(j, g)| j != i && *g == pred)
                        .count();
                    (matches as f64 / 3.0).min(1.0)
                })
                .sum();
            total / n as f64
        }
    }
}

/// Python's `float(text)`: surrounding whitespace ignored, single underscores allowed between
/// digits, "inf"/"infinity"/"nan" in any case with an optional sign.
pub fn python_float(text: &str) -> Option<f64> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    let cleaned = if t.contains('_') {
        let chars: Vec<char> = t.chars().collect();
        for (i, &c) in chars.iter().enumerate() {
            if c == '_' {
                let ok = i > 0
                    && chars[i - 1].is_ascii_digit()
                    && chars.get(i + 1).is_some_and(|n| n.is_ascii_digit());
                if !ok {
                    return None;
                }
            }
        }
        t.replace('_', "")
    } else {
        t.to_string()
    };
    cleaned.parse::<f64>().ok()
}

/// ChartQA's relaxed correctness (Methani et al. 2020, as used by ChartQA and by VLMEvalKit's
/// `relaxed_correctness`, from pix2struct): if both strings are numbers (a trailing "%"
/// divides by 100) and the target is not 0, the prediction is right when it is within 5 % of
/// the target; otherwise the lower-cased strings must be equal.
pub fn relaxed_correctness(target: &str, prediction: &str) -> bool {
    fn to_float(text: &str) -> Option<f64> {
        if text.ends_with('%') {
            python_float(text.trim_end_matches('%')).map(|v| v / 100.0)
        } else {
            python_float(text)
        }
    }
    match (to_float(prediction), to_float(target)) {
        (Some(p), Some(t)) if t != 0.0 => (p - t).abs() / t.abs() <= 0.05,
        _ => prediction.to_lowercase() == target.to_lowercase(),
    }
}

/// ChartQA relaxed accuracy of one prediction: 1 if it is relaxed-correct for any reference
/// (VLMEvalKit: `np.max` over the answers), the prediction trimmed first.
pub fn relaxed_accuracy(prediction: &str, answers: &[String]) -> f64 {
    let pred = prediction.trim();
    f64::from(u8::from(
        answers.iter().any(|a| relaxed_correctness(a, pred)),
    ))
}

/// The OCRBench category whose answers are compared with all spaces removed and case kept.
pub const OCRBENCH_HME: &str = "Handwritten Mathematical Expression Recognition";

/// OCRBench's rule (Liu et al. 2023; VLMEvalKit `OCRBench.evaluate`): the prediction is right
/// if it contains any reference answer. Both sides are trimmed, newlines become spaces and
/// case is ignored; for handwritten mathematical expressions all spaces are removed instead
/// and case matters.
pub fn ocrbench_correct(prediction: &str, answers: &[String], category: Option<&str>) -> bool {
    let hme = category == Some(OCRBENCH_HME);
    let norm = |s: &str| {
        if hme {
            s.trim().replace('\n', " ").replace(' ', "")
        } else {
            s.to_lowercase().trim().replace('\n', " ")
        }
    };
    let pred = norm(prediction);
    answers.iter().any(|a| pred.contains(&norm(a)))
}

const UNITS: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];

const TENS: [&str; 8] = [
    "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];

fn number_word(word: &str) -> Option<u32> {
    if let Some(i) = UNITS.iter().position(|u| *u == word) {
        return Some(i as u32);
    }
    TENS.iter()
        .position(|t| *t == word)
        .map(|i| 20 + 10 * i as u32)
}

/// The first number in `text`: a run of digits (with an optional decimal part, and commas
/// between digit groups ignored: "1,200") or an English number word from "zero" to
/// "ninety-nine" ("twenty-one" and "twenty one" are 21), whichever comes first.
pub fn first_number(text: &str) -> Option<f64> {
    let lower = text.to_lowercase();
    let chars: Vec<char> = lower.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() {
            let mut s = String::new();
            let mut j = i;
            while j < chars.len() {
                let d = chars[j];
                if d.is_ascii_digit() {
                    s.push(d);
                } else if (d == ',' || d == '.')
                    && j + 1 < chars.len()
                    && chars[j + 1].is_ascii_digit()
                    && !(d == '.' && s.contains('.'))
                {
                    if d == '.' {
                        s.push('.');
                    }
                } else {
                    break;
                }
                j += 1;
            }
            return s.parse().ok();
        }
        if c.is_alphabetic() {
            let start = i;
            while i < chars.len() && chars[i].is_alphabetic() {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if let Some(v) = number_word(&word) {
                // "twenty-one", "twenty one": a tens word followed by a unit word.
                if v >= 20 && i < chars.len() && (chars[i] == '-' || chars[i] == ' ') {
                    let s2 = i + 1;
                    let mut e2 = s2;
                    while e2 < chars.len() && chars[e2].is_alphabetic() {
                        e2 += 1;
                    }
                    let next: String = chars[s2..e2].iter().collect();
                    if let Some(u) = number_word(&next).filter(|u| (1..10).contains(u)) {
                        return Some(f64::from(v + u));
                    }
                }
                return Some(f64::from(v));
            }
            continue;
        }
        i += 1;
    }
    None
}

/// Counting as VLMEvalKit's `CountBenchQA.evaluate` scores it: the reference answer's text
/// occurs in the prediction ("There are 12 stars" is right for 2 and for 12; "three" is
/// wrong for 3).
pub fn count_correct_vlmevalkit(prediction: &str, answer: &str) -> bool {
    prediction.contains(answer)
}

/// Counting, our stricter rule (`--count-rule first-number`): the first number of the
/// prediction ([`first_number`]) equals the reference count (itself read with
/// [`first_number`], so "3" and "three" are both fine).
pub fn count_correct(prediction: &str, answer: &str) -> bool {
    match (first_number(prediction), first_number(answer)) {
        (Some(p), Some(a)) => p == a,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choices(opts: &[(char, &str)]) -> Vec<(char, String)> {
        opts.iter().map(|(c, s)| (*c, s.to_string())).collect()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// MMBench (Liu et al. 2023, "MMBench: Is Your Multi-modal Model an All-around Player?",
    /// sec. 3.2): a choice label in the answer is taken as the prediction; otherwise the
    /// option whose content appears in the answer; refusals and ambiguous answers get no
    /// option. The option-text example is the teddy-bear example of VLMEvalKit's matching
    /// prompt (`multiple_choice.py`, `build_prompt`).
    #[test]
    fn multiple_choice_letter_then_text() {
        let c = choices(&[
            ('A', "teddy bear"),
            ('B', "rabbit"),
            ('C', "cat"),
            ('D', "dog"),
        ]);
        assert_eq!(can_infer("B", &c), Some('B'));
        assert_eq!(can_infer("(C) cat", &c), Some('C'));
        assert_eq!(can_infer("The answer is D.", &c), Some('D'));
        assert_eq!(can_infer("A cute teddy bear", &c), Some('A'));
        // "A" as the article and "B" as a label: two labels, nothing from the letters; the text
        // rule then finds "rabbit" alone.
        assert_eq!(can_infer("A B rabbit", &c), Some('B'));
        // Two labels and no unique option text: nothing inferred (scored as wrong).
        assert_eq!(can_infer("A or B", &c), None);
        // Two option texts: nothing inferred.
        assert_eq!(can_infer("a cat and a dog", &c), None);
        assert_eq!(can_infer("Spider", &c), None);
        // A known refusal is option Z.
        assert_eq!(can_infer("Cannot determine the answer", &c), Some('Z'));
        assert_eq!(can_infer("Z", &c), Some('Z'));
        assert!(mcq_correct(" C\n", &c, 'C'));
        assert!(!mcq_correct("Spider", &c, 'A'));
        // A letter that is not an option is not a label.
        let ab = choices(&[('A', "yes"), ('B', "no")]);
        assert_eq!(can_infer_option("C", &ab), None);
    }

    /// POPE (Li et al. 2023, "Evaluating Object Hallucination in Large Vision-Language
    /// Models", sec. 4): answers are parsed for "yes"/"no"; accuracy, precision, recall and F1
    /// with "yes" as positive. Worked confusion table: TP 3, FP 1, FN 2, TN 4 gives accuracy
    /// 0.7, precision 0.75, recall 0.6, F1 2·0.75·0.6/1.35 = 2/3.
    #[test]
    fn yes_no_extraction_and_pope_metrics() {
        assert_eq!(yorn_extraction("Yes, there is a dog."), YesNo::Yes);
        assert_eq!(yorn_extraction("No."), YesNo::No);
        assert_eq!(yorn_extraction("yes or no"), YesNo::Unknown);
        assert_eq!(yorn_extraction("There is a dog"), YesNo::Unknown);
        assert_eq!(yorn_extraction("NO!"), YesNo::No);
        use YesNo::*;
        let mut pairs = vec![(Yes, Yes); 3];
        pairs.push((No, Yes));
        pairs.extend([(Yes, No), (Yes, Unknown)]);
        pairs.extend(vec![(No, No); 4]);
        let m = yes_no_metrics(&pairs).unwrap();
        assert!((m.accuracy - 0.7).abs() < 1e-12);
        assert!((m.precision - 0.75).abs() < 1e-12);
        assert!((m.recall - 0.6).abs() < 1e-12);
        assert!((m.f1 - 2.0 / 3.0).abs() < 1e-12);
        // No "yes" predictions: precision and F1 are 0 by definition, not NaN.
        let m = yes_no_metrics(&[(Yes, No), (No, No)]).unwrap();
        assert_eq!(
            (m.precision, m.recall, m.f1, m.accuracy),
            (0.0, 0.0, 0.0, 0.5)
        );
        assert_eq!(yes_no_metrics(&[]), None);
    }

    /// The official VQA evaluation (Antol et al. 2015, visualqa.org/evaluation): answers are
    /// lower-cased, punctuation and articles removed, number words made digits and
    /// contractions given their apostrophe.
    #[test]
    fn vqa_normalisation() {
        assert_eq!(normalize_vqa_answer("Two"), "2");
        assert_eq!(normalize_vqa_answer("The Dog."), "dog");
        assert_eq!(normalize_vqa_answer("an apple"), "apple");
        assert_eq!(normalize_vqa_answer("isnt"), "isn't");
        assert_eq!(normalize_vqa_answer("yes!"), "yes");
        // A mark touching a space is deleted, one inside a word becomes a space.
        assert_eq!(normalize_vqa_answer("red - white"), "red white");
        assert_eq!(normalize_vqa_answer("red-white"), "red white");
        // Digits keep their decimal point and thousands commas lose the comma.
        assert_eq!(normalize_vqa_answer("3.5"), "3.5");
        assert_eq!(normalize_vqa_answer("1,000"), "1000");
        assert_eq!(normalize_vqa_answer("  new\nyork\t"), "new york");
    }

    /// VQA accuracy = min(#humans that gave the answer / 3, 1), averaged over the 10 subsets
    /// of 9 of the 10 human answers (Antol et al. 2015). With 10 answers of which k equal the
    /// prediction: k=0 gives 0; k=1 gives (1·0 + 9·1/3)/10 = 0.3; k=2 gives (2·1/3 +
    /// 8·2/3)/10 = 0.6; k=3 gives (3·2/3 + 7·1)/10 = 0.9; k≥4 gives 1.
    #[test]
    fn vqa_accuracy_worked_examples() {
        let answers = |k: usize| {
            let mut v = vec!["dog".to_string(); k];
            v.resize(10, "cat".to_string());
            v
        };
        for (k, want) in [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)] {
            let got = vqa_score("Dog", &answers(k));
            assert!((got - want).abs() < 1e-12, "k={k}: {got} vs {want}");
        }
        // Normalisation applies to both sides: "two" matches "2".
        let a = strings(&["2", "2", "2", "two", "3", "3", "3", "3", "3", "3"]);
        assert!((vqa_score("Two.", &a) - 1.0).abs() < 1e-12);
        // Single reference: exact match after normalisation (our documented choice).
        assert_eq!(vqa_score("A dog", &strings(&["dog"])), 1.0);
        assert_eq!(vqa_score("cat", &strings(&["dog"])), 0.0);
        assert_eq!(vqa_score("cat", &[]), 0.0);
    }

    /// ChartQA (Masry et al. 2022, sec. 5.1, following Methani et al. 2020): numeric answers
    /// are right within 5 % of the gold value, other answers need an exact match.
    #[test]
    fn chartqa_relaxed_accuracy() {
        assert!(relaxed_correctness("100", "104"));
        assert!(relaxed_correctness("100", "95"));
        assert!(!relaxed_correctness("100", "106"));
        assert!(!relaxed_correctness("100", "94.9"));
        assert!(relaxed_correctness("12%", "0.12"));
        assert!(relaxed_correctness("0.12", "12%"));
        assert!(relaxed_correctness("Brazil", "brazil"));
        assert!(!relaxed_correctness("Brazil", "Brazil."));
        // A gold value of 0 needs the exact string.
        assert!(relaxed_correctness("0", "0"));
        assert!(!relaxed_correctness("0", "0.0"));
        assert_eq!(relaxed_accuracy(" 104 ", &strings(&["100"])), 1.0);
        assert_eq!(relaxed_accuracy("7", &strings(&["10", "7.2"])), 1.0);
        assert_eq!(relaxed_accuracy("abc", &strings(&["10"])), 0.0);
        assert_eq!(python_float(" 1_000 "), Some(1000.0));
        assert_eq!(python_float("1__0"), None);
    }

    /// OCRBench (Liu et al. 2023, "OCRBench: On the Hidden Mystery of OCR in Large Multimodal
    /// Models"): a prediction is correct if it contains the ground-truth answer; for
    /// handwritten mathematical expressions spaces are removed first.
    #[test]
    fn ocrbench_containment() {
        let a = strings(&["Hello World"]);
        assert!(ocrbench_correct(
            "The text says: hello world.",
            &a,
            Some("Regular Text Recognition")
        ));
        assert!(!ocrbench_correct("hello", &a, None));
        assert!(ocrbench_correct("x", &strings(&["y", "X"]), None));
        let f = strings(&["x ^ { 2 } + 1"]);
        assert!(ocrbench_correct("$x^{2}+1$", &f, Some(OCRBENCH_HME)));
        // Case matters for expressions.
        assert!(!ocrbench_correct("X^{2}+1", &f, Some(OCRBENCH_HME)));
    }

    /// Counting (CountBench, Paiss et al. 2023: the count of objects, 2 to 10): the first
    /// number stated, in digits or words, must equal the count.
    #[test]
    fn counting() {
        assert_eq!(first_number("There are 3 dogs and 2 cats."), Some(3.0));
        assert_eq!(first_number("Seven."), Some(7.0));
        assert_eq!(first_number("I count twenty-one birds, not 20"), Some(21.0));
        assert_eq!(first_number("someone ate 1,200 apples"), Some(1200.0));
        assert_eq!(first_number("about 2.5"), Some(2.5));
        assert_eq!(first_number("no number here"), None);
        // "one" inside "someone" is not a number word.
        assert_eq!(first_number("someone"), None);
        assert!(count_correct("There are four apples.", "4"));
        assert!(count_correct("4", "four"));
        assert!(!count_correct("There are 4 apples, or maybe 5.", "5"));
        assert!(!count_correct("many", "5"));
    }
}
