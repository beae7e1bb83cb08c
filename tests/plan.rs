//! `interlace plan` end to end on a hand-made score table whose plan is worked out by hand
//! from docs/SPEC.md's rule.

mod common;

/// L = 6. s3 = [0.5, 0.9, 0.7], s2 = [0.2, 0.3, 0.4, 0.5], s1 = [0.1, 0.6, 0.8, 0.3, 0.2].
const SIM: &str = r#"{"model": "hand", "model_type": "qwen3_vl", "num_layers": 6, "num_samples": 1,
 "packs": {"1": {"0": [0.1], "1": [0.6], "2": [0.8], "3": [0.3], "4": [0.2]},
           "2": {"0": [0.2], "1": [0.3], "2": [0.4], "3": [0.5]},
           "3": {"0": [0.5], "1": [0.9], "2": [0.7]}}}"#;

fn plan(dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    std::fs::write(dir.join("sim.json"), SIM).unwrap();
    common::cli()
        .arg("plan")
        .arg("--similarity")
        .arg(dir.join("sim.json"))
        .arg("--out")
        .arg(dir.join("plan.json"))
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn interlace_plan_by_hand() {
    // n = floor(6 x 0.2) = 1. Best triplet by s3 is i = 1 (layers 1, 2, 3); s1(1) = 0.6 <
    // s1(2) = 0.8, so layer 2 is dropped, 1 fine-tuned, 3 is the anchor.
    let tmp = tempfile::tempdir().unwrap();
    let out = plan(tmp.path(), &["--ratio", "0.2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("plan.json")).unwrap())
            .unwrap();
    assert_eq!(p["strategy"], "interlace");
    assert_eq!(p["num_layers"], 6);
    assert_eq!(p["drop"], serde_json::json!([2]));
    assert_eq!(p["finetune"], serde_json::json!([1]));
    assert_eq!(p["anchors"], serde_json::json!([3]));
    assert_eq!(p["kept"], serde_json::json!([0, 1, 3, 4, 5]));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("drop") && table.contains("anchor"),
        "{table}"
    );
}

#[test]
fn infeasible_ratio_names_the_largest_feasible_one() {
    // n = floor(6 x 0.34) = 2, but after triplet (1, 2, 3) no triplet or pair is free of
    // assigned layers: only 1 of 6 layers can go, ratio 1/6.
    let tmp = tempfile::tempdir().unwrap();
    let out = plan(tmp.path(), &["--ratio", "0.34"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("largest feasible ratio is 0.1666"), "{err}");
    assert!(
        !tmp.path().join("plan.json").exists(),
        "no plan may be left behind"
    );
}

#[test]
fn bad_arguments_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = plan(tmp.path(), &["--strategy", "magic"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid value 'magic'") && err.contains("interlace-oa"),
        "{err}"
    );
    let out = plan(tmp.path(), &["--ratio", "1.0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ratio"));
    // A plan for a different model: the scores file must match itself at least.
    std::fs::write(
        tmp.path().join("bad.json"),
        r#"{"num_layers": 6, "packs": {"1": {"0": [0.1]}}}"#,
    )
    .unwrap();
    let out = common::cli()
        .args(["plan", "--similarity"])
        .arg(tmp.path().join("bad.json"))
        .arg("--out")
        .arg(tmp.path().join("p.json"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.json"));
}
