//! `--data` input: FineVision Parquet read row by row and compared with what pyarrow reads
//! from the same files (tests/fixtures/data/finevision_expected.json, written by
//! tools/make_parquet_fixtures.py), per-source sampling against the generator's own
//! implementation of the rule, and bad input (corrupt, truncated, wrong columns).

mod common;

use std::path::{Path, PathBuf};

use common::fixtures;
use interlace::data::{
    choose, choose_per_source, choose_portion, load_portion, open_sources, read_samples,
    split_samples, ImageSource, Sample, Source, Take,
};
use interlace::error_line;
use serde_json::Value;

fn dataset() -> PathBuf {
    fixtures().join("data/finevision")
}

fn expected() -> Value {
    let path = fixtures().join("data/finevision_expected.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The expected rows of one subset, in source order (files by name, rows in order).
fn expected_rows(exp: &Value, subset: &str) -> Vec<Value> {
    exp["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["file"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{subset}/"))
        })
        .cloned()
        .collect()
}

/// SHA-256 (FIPS 180-4), small and slow, for comparing image bytes with the digests
/// pyarrow's reading gave (no hashing crate among our dependencies).
fn sha256(data: &[u8]) -> String {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 64];
        for (i, c) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}

#[test]
fn sha256_helper_matches_published_vectors() {
    assert_eq!(
        sha256(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        sha256(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        sha256(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
    );
}

/// One row read by us equals the row pyarrow read (`exp`), at `origin`.
fn assert_row_matches(row: &anyhow::Result<Sample>, exp: &Value, dir: &Path) {
    let file = dir.join(exp["file"].as_str().unwrap());
    let index = exp["row"].as_u64().unwrap();
    let origin = format!("{}#{index}", file.display());
    if exp["malformed"].as_bool().unwrap() {
        let err = error_line(row.as_ref().expect_err("a malformed row must be an error"));
        assert!(err.contains(&origin) && err.contains("texts[0]"), "{err}");
        return;
    }
    let sample = row.as_ref().unwrap_or_else(|e| panic!("{origin}: {e:#}"));
    assert_eq!(sample.origin, origin);
    let texts = exp["texts"].as_array().unwrap();
    let want_turns: Vec<(&str, &str)> = texts
        .iter()
        .flat_map(|t| {
            [
                ("user", t["user"].as_str().unwrap()),
                ("assistant", t["assistant"].as_str().unwrap()),
            ]
        })
        .collect();
    let got_turns: Vec<(&str, &str)> = sample
        .turns
        .iter()
        .map(|t| (t.role.as_str(), t.text.as_str()))
        .collect();
    assert_eq!(got_turns, want_turns, "{origin}");
    let images = exp["images"].as_array().unwrap();
    assert_eq!(sample.images.len(), images.len(), "{origin}");
    let file_name = file.file_name().unwrap().to_string_lossy();
    for (k, (got, want)) in sample.images.iter().zip(images).enumerate() {
        let ImageSource::Bytes { bytes, name } = got else {
            panic!("{origin}: image {k} is not bytes");
        };
        assert_eq!(bytes.len() as u64, want["len"].as_u64().unwrap());
        assert_eq!(sha256(bytes), want["sha256"].as_str().unwrap(), "{origin}");
        let want_name = match want["path"].as_str() {
            Some(p) if !p.is_empty() => p.to_string(),
            _ => format!("{file_name}#{index}/img{k}"),
        };
        assert_eq!(name, &want_name);
        let loaded = got.load();
        if want["decodable"].as_bool().unwrap() {
            loaded.unwrap_or_else(|e| panic!("{origin}: {e:#}"));
        } else {
            let err = error_line(&loaded.expect_err("undecodable image must fail"));
            assert!(err.contains(&want_name), "{err}");
        }
    }
}

fn all_rows(source: &Source) -> Vec<anyhow::Result<Sample>> {
    let all: Vec<usize> = (0..source.len()).collect();
    source
        .read_rows(&all)
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

#[test]
fn finevision_rows_match_pyarrow() {
    let exp = expected();
    let sources = open_sources(&dataset()).unwrap();
    let names: Vec<PathBuf> = sources.iter().map(|s| PathBuf::from(s.name())).collect();
    assert_eq!(
        names,
        vec![dataset().join("subset_a"), dataset().join("subset_b")]
    );
    let mut checked = 0;
    for (source, want) in sources.iter().zip(exp["sources"].as_array().unwrap()) {
        assert!(source.is_parquet());
        assert_eq!(source.len() as u64, want["rows"].as_u64().unwrap());
        let rows = all_rows(source);
        let want_rows = expected_rows(&exp, want["name"].as_str().unwrap());
        assert_eq!(rows.len(), want_rows.len());
        for (row, want) in rows.iter().zip(&want_rows) {
            assert_row_matches(row, want, &dataset());
            checked += 1;
        }
    }
    assert_eq!(checked, exp["rows"].as_array().unwrap().len());
}

#[test]
fn single_parquet_file_is_one_source() {
    let exp = expected();
    for file in exp["sources"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["files"].as_array().unwrap())
    {
        let rel = file["file"].as_str().unwrap();
        let sources = open_sources(&dataset().join(rel)).unwrap();
        assert_eq!(sources.len(), 1);
        assert_eq!(sources[0].len() as u64, file["rows"].as_u64().unwrap());
        let want: Vec<Value> = exp["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["file"] == rel)
            .cloned()
            .collect();
        let rows = all_rows(&sources[0]);
        assert_eq!(rows.len(), want.len());
        for (row, want) in rows.iter().zip(&want) {
            assert_row_matches(row, want, &dataset());
        }
    }
}

#[test]
fn reading_some_rows_reads_exactly_those_rows() {
    let exp = expected();
    let sources = open_sources(&dataset()).unwrap();
    // subset_a: file 0 has row groups of 3, 3, 1 rows; file 1 (rows 7..12) of 2, 2, 1.
    let picks: &[(usize, &[usize])] = &[
        (0, &[0]),
        (0, &[2, 3]), // across a row-group boundary
        (0, &[6, 7]), // across a file boundary
        (0, &[5]),    // middle of a row group, earlier groups skipped
        (0, &[11]),   // the last row only: every earlier group and file skipped
        (0, &[1, 4, 8, 10]),
        (1, &[3, 8]), // subset_b: row groups of 4, 4, 1
        (1, &[2]),    // a row whose image list is null: no images
        (0, &[]),
    ];
    for &(s, rows) in picks {
        let source = &sources[s];
        let name = exp["sources"][s]["name"].as_str().unwrap();
        let want = expected_rows(&exp, name);
        let got: Vec<_> = source
            .read_rows(rows)
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(got.len(), rows.len(), "{name} {rows:?}");
        for (row, &i) in got.iter().zip(rows) {
            assert_row_matches(row, &want[i], &dataset());
        }
    }
}

#[test]
fn read_rows_rejects_unsorted_or_out_of_range_indices() {
    let sources = open_sources(&dataset()).unwrap();
    let n = sources[0].len();
    for rows in [vec![3, 1], vec![2, 2], vec![0, n]] {
        let err = error_line(&sources[0].read_rows(&rows).err().expect("must fail"));
        assert!(err.contains("subset_a"), "{err}");
    }
}

#[test]
fn portion_is_chosen_per_subset_like_the_reference_rule() {
    let exp = expected();
    let sizes: Vec<usize> = exp["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["rows"].as_u64().unwrap() as usize)
        .collect();
    let names: Vec<&str> = exp["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for choice in exp["choices"].as_array().unwrap() {
        let portion = choice["portion"].as_f64().unwrap();
        let samples = choice["samples"].as_u64().map(|k| k as usize);
        let seed = choice["seed"].as_u64().unwrap();
        let want: Vec<Vec<usize>> = names
            .iter()
            .map(|n| {
                choice["rows"][n]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as usize)
                    .collect()
            })
            .collect();
        assert_eq!(
            choose_per_source(&sizes, portion, samples, seed, Take::Random).unwrap(),
            want,
            "{choice}"
        );
        let chosen = choose_portion(&dataset(), portion, samples, seed, Take::Random).unwrap();
        assert_eq!(chosen.chosen(), want.as_slice(), "{choice}");
        assert_eq!(chosen.len(), want.iter().map(Vec::len).sum::<usize>());
        assert_eq!(chosen.total(), sizes.iter().sum::<usize>());

        // The rows read are those rows, in source order.
        let rows = load_portion(&dataset(), portion, samples, seed, Take::Random).unwrap();
        let want_rows: Vec<Value> = names
            .iter()
            .zip(&want)
            .flat_map(|(n, idx)| {
                let all = expected_rows(&exp, n);
                idx.iter().map(move |&i| all[i].clone()).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(rows.len(), want_rows.len());
        for (row, want) in rows.iter().zip(&want_rows) {
            assert_row_matches(row, want, &dataset());
        }
    }
}

#[test]
fn samples_are_split_by_largest_remainder() {
    // Hand-worked: 4 × 12/21 = 2.29, 4 × 9/21 = 1.71 → 2 + 1, the left-over one to the
    // larger remainder (0.71).
    assert_eq!(split_samples(4, &[12, 9]), vec![2, 2]);
    assert_eq!(split_samples(5, &[12, 9]), vec![3, 2]); // 2.86, 2.14
    assert_eq!(split_samples(1, &[1, 1, 1]), vec![1, 0, 0]); // ties: earlier source
    assert_eq!(split_samples(2, &[0, 5, 5]), vec![0, 1, 1]);
    assert_eq!(split_samples(100, &[12, 9]), vec![12, 9]);
    assert_eq!(split_samples(0, &[12, 9]), vec![0, 0]);
    for total in 0..40 {
        let sizes = [7, 0, 13, 1, 19];
        let shares = split_samples(total, &sizes);
        assert_eq!(shares.iter().sum::<usize>(), total.min(40));
        assert!(shares.iter().zip(sizes).all(|(&s, n)| s <= n));
    }
}

#[test]
fn one_llava_file_is_chosen_as_before() {
    let tmp = tempfile::tempdir().unwrap();
    let data: Vec<Value> = (0..37)
        .map(|i| {
            serde_json::json!({"conversations": [
                {"from": "human", "value": format!("question {i}")},
                {"from": "gpt", "value": "answer"}]})
        })
        .collect();
    let path = tmp.path().join("data.jsonl");
    let text: Vec<String> = data.iter().map(Value::to_string).collect();
    std::fs::write(&path, text.join("\n")).unwrap();
    for (portion, samples, seed) in [(0.1, None, 42), (0.5, None, 1), (0.1, Some(5), 9)] {
        let portion_chosen = choose_portion(&path, portion, samples, seed, Take::Random).unwrap();
        let want = choose(37, portion, samples, seed, Take::Random).unwrap();
        assert_eq!(portion_chosen.chosen(), std::slice::from_ref(&want));
        let rows = load_portion(&path, portion, samples, seed, Take::Random).unwrap();
        let got: Vec<String> = rows
            .into_iter()
            .map(|r| r.unwrap().turns[0].text.clone())
            .collect();
        let want: Vec<String> = want.iter().map(|i| format!("question {i}")).collect();
        assert_eq!(got, want);
    }
    assert_eq!(read_samples(&path).unwrap().len(), 37);
}

/// `--take first`: the first rows of each source in file order, as many as `--portion`
/// (rounded down, at least one) or `--samples` (split by source size) ask for.
#[test]
fn take_first_takes_the_first_rows_of_each_source() {
    assert_eq!(
        choose(37, 0.1, None, 5, Take::First).unwrap(),
        vec![0, 1, 2]
    );
    assert_eq!(choose(37, 0.01, None, 5, Take::First).unwrap(), vec![0]);
    assert_eq!(
        choose(37, 1.0, Some(4), 5, Take::First).unwrap(),
        vec![0, 1, 2, 3]
    );
    assert_eq!(
        choose(3, 1.0, Some(10), 5, Take::First).unwrap(),
        vec![0, 1, 2]
    );
    // 10 samples over sources of 30 and 10 rows: 7.5 and 2.5, the remainder to the first.
    assert_eq!(
        choose_per_source(&[30, 10], 1.0, Some(10), 5, Take::First).unwrap(),
        vec![(0..8).collect::<Vec<_>>(), vec![0, 1]]
    );
    assert_eq!(
        choose_per_source(&[200, 50], 0.02, None, 5, Take::First).unwrap(),
        vec![vec![0, 1, 2, 3], vec![0]]
    );
    // The seed does not matter; random takes other rows for these seeds.
    assert_eq!(
        choose(1000, 0.01, None, 1, Take::First).unwrap(),
        choose(1000, 0.01, None, 2, Take::First).unwrap()
    );
    assert_ne!(
        choose(1000, 0.01, None, 1, Take::Random).unwrap(),
        choose(1000, 0.01, None, 1, Take::First).unwrap()
    );
}

#[test]
fn a_bad_llava_record_is_an_error_of_that_row_only() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("data.json");
    let data = serde_json::json!([
        {"conversations": [{"from": "human", "value": "fine"}]},
        {"conversations": [{"from": "robot", "value": "who?"}]},
        {"conversations": [{"from": "human", "value": "fine too"}]}
    ]);
    std::fs::write(&path, data.to_string()).unwrap();
    let rows = load_portion(&path, 1.0, None, 0, Take::Random).unwrap();
    assert!(rows[0].is_ok() && rows[2].is_ok());
    let err = error_line(rows[1].as_ref().err().unwrap());
    assert!(
        err.contains("data.json#1") && err.contains("robot"),
        "{err}"
    );
    // Reading everything at once still refuses the file.
    assert!(read_samples(&path).is_err());
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn directories_give_one_source_per_directory_holding_parquet() {
    let tmp = tempfile::tempdir().unwrap();
    // The Hugging Face layout: README and dot-files at the top, one directory per subset,
    // a nested subset below a plain directory; files detected by content, not by name.
    let root = tmp.path().join("FineVision");
    copy_tree(&dataset(), &root);
    std::fs::write(root.join("README.md"), "# dataset card").unwrap();
    std::fs::write(root.join("subset_a/notes.json"), "[]").unwrap();
    std::fs::create_dir_all(root.join(".cache/x")).unwrap();
    std::fs::copy(
        dataset().join("subset_b/train-00000-of-00001.parquet"),
        root.join(".cache/x/hidden.parquet"),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("more/subset_c")).unwrap();
    std::fs::copy(
        dataset().join("subset_b/train-00000-of-00001.parquet"),
        root.join("more/subset_c/part.bin"),
    )
    .unwrap();
    let sources = open_sources(&root).unwrap();
    let names: Vec<PathBuf> = sources.iter().map(|s| PathBuf::from(s.name())).collect();
    assert_eq!(
        names,
        vec![
            root.join("more/subset_c"),
            root.join("subset_a"),
            root.join("subset_b")
        ]
    );
    assert_eq!(
        sources.iter().map(Source::len).collect::<Vec<_>>(),
        vec![9, 12, 9]
    );

    // A flat directory of Parquet files is one source.
    let sources = open_sources(&dataset().join("subset_a")).unwrap();
    assert_eq!(sources.len(), 1);
    assert_eq!(sources[0].len(), 12);
}

/// `load_portion` must fail with one line naming `file` and containing `needle`.
fn assert_data_error(data: &Path, file: &str, needle: &str) {
    let result = std::panic::catch_unwind(|| load_portion(data, 1.0, None, 0, Take::Random));
    let result = result.unwrap_or_else(|_| panic!("{}: panicked", data.display()));
    let err = error_line(
        &result
            .err()
            .unwrap_or_else(|| panic!("{}: accepted", data.display())),
    );
    assert!(
        err.contains(file) && err.contains(needle) && !err.contains('\n'),
        "{}: {err}",
        data.display()
    );
}

#[test]
fn wrong_columns_and_codecs_are_errors_naming_the_file() {
    let bad = fixtures().join("data/bad");
    assert_data_error(
        &bad.join("no_texts.parquet"),
        "no_texts.parquet",
        "\"texts\"",
    );
    assert_data_error(
        &bad.join("texts_are_strings.parquet"),
        "texts_are_strings.parquet",
        "not a list of {user, assistant}",
    );
    assert_data_error(&bad.join("brotli.parquet"), "brotli.parquet", "BROTLI");
    // The directory holding them: the first bad file (by name) is named.
    assert_data_error(&bad, "brotli.parquet", "BROTLI");

    let tmp = tempfile::tempdir().unwrap();
    assert_data_error(
        tmp.path(),
        &tmp.path().display().to_string(),
        "no Parquet files",
    );
    let junk = tmp.path().join("junk.dat");
    std::fs::write(&junk, [0u8, 159, 146, 150, 1, 2]).unwrap();
    assert_data_error(&junk, "junk.dat", "nor Parquet");
    assert_data_error(&tmp.path().join("missing"), "missing", "cannot open");
}

#[test]
fn corrupt_parquet_is_an_error_naming_the_file_not_a_panic() {
    let good_path = dataset().join("subset_a/train-00000-of-00002.parquet");
    let good = std::fs::read(&good_path).unwrap();
    let n = good.len();
    let footer_len = u32::from_le_bytes(good[n - 8..n - 4].try_into().unwrap()) as usize;
    let footer = n - 8 - footer_len;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("broken.parquet");
    let mut variants: Vec<(String, Vec<u8>)> = vec![
        ("magic only".into(), b"PAR1".to_vec()),
        ("truncated to half".into(), good[..n / 2].to_vec()),
        ("last byte missing".into(), good[..n - 1].to_vec()),
        ("footer missing".into(), good[..footer].to_vec()),
    ];
    let mut garbage = good.clone();
    for (i, b) in garbage[4..n - 8].iter_mut().enumerate() {
        *b = (i * 131 % 251) as u8;
    }
    variants.push(("garbage after the magic".into(), garbage));
    let mut long = good.clone();
    long[n - 8..n - 4].copy_from_slice(&u32::MAX.to_le_bytes());
    variants.push(("footer length too large".into(), long));
    let mut zero = good.clone();
    zero[n - 8..n - 4].copy_from_slice(&0u32.to_le_bytes());
    variants.push(("footer length zero".into(), zero));
    // Footer bytes overwritten one at a time (every 7th byte, with two values).
    for pos in (footer..n - 8).step_by(7) {
        for v in [0x00, 0xff] {
            let mut b = good.clone();
            b[pos] = v;
            variants.push((format!("footer byte {pos} = {v:#x}"), b));
        }
    }
    // Data pages overwritten (the row reading must fail or read; never panic).
    for pos in (4..footer).step_by(97) {
        let mut b = good.clone();
        b[pos] ^= 0x5a;
        variants.push((format!("data byte {pos} ^ 0x5a"), b));
    }
    let mut errors = 0;
    for (what, bytes) in &variants {
        std::fs::write(&path, bytes).unwrap();
        let result = std::panic::catch_unwind(|| load_portion(&path, 1.0, None, 0, Take::Random));
        let result = result.unwrap_or_else(|_| panic!("{what}: panicked"));
        match result {
            Err(e) => {
                let err = error_line(&e);
                assert!(err.contains("broken.parquet"), "{what}: {err}");
                errors += 1;
            }
            Ok(rows) => {
                // A change the format cannot notice (inside an image, or a row count in
                // the footer): the rows the footer promises come back, and a bad one is
                // an error of its row, naming the file.
                let promised: usize = open_sources(&path).unwrap().iter().map(Source::len).sum();
                assert_eq!(rows.len(), promised, "{what}");
                for r in rows.iter().filter_map(|r| r.as_ref().err()) {
                    assert!(error_line(r).contains("broken.parquet"), "{what}");
                }
            }
        }
    }
    // Every truncation and footer change above is detected.
    assert!(errors >= 7, "{errors} errors of {}", variants.len());
    for (what, bytes) in &variants[..7] {
        std::fs::write(&path, bytes).unwrap();
        assert!(
            load_portion(&path, 1.0, None, 0, Take::Random).is_err(),
            "{what}"
        );
    }
}
