//! Models and data sets by their Hub names (`--model Org/Name[@revision]`, `--data
//! Org/Name`), resolved offline in a Hugging Face cache laid out as `huggingface_hub` lays
//! it out (blobs, refs, snapshots of symbolic links), built here in a temporary directory.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{assert_ok, assert_one_line_error, model_dir};
use interlace::hub::{resolve_in, RepoType};

const MAIN: &str = "0123456789abcdef0123456789abcdef01234567";
const TAGGED: &str = "89abcdef0123456789abcdef0123456789abcdef";

/// Puts every file of `src` into `repo`'s blob store and links it from
/// `snapshots/<commit>/` (relative links, as huggingface_hub makes them).
fn add_snapshot(repo: &Path, commit: &str, src: &Path) {
    let snap = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    let mut stack = vec![(src.to_path_buf(), snap.clone(), 0usize)];
    while let Some((from, to, depth)) = stack.pop() {
        for e in std::fs::read_dir(&from).unwrap() {
            let e = e.unwrap();
            let (path, name) = (e.path(), e.file_name());
            if path.is_dir() {
                std::fs::create_dir_all(to.join(&name)).unwrap();
                stack.push((path, to.join(&name), depth + 1));
                continue;
            }
            let blob = format!("{commit}-{}-{}", depth, name.to_string_lossy());
            std::fs::copy(&path, repo.join("blobs").join(&blob)).unwrap();
            // snapshots/<commit>/<depth dirs>/file → ../../(../ per depth)blobs/<blob>
            let up = "../".repeat(2 + depth);
            std::os::unix::fs::symlink(format!("{up}blobs/{blob}"), to.join(&name)).unwrap();
        }
    }
}

/// A cache with the tiny-b fixture as `Org/Tiny` (main → MAIN, tag v1 → TAGGED) and a
/// small synthetic FineVision-style data set as `Org/Data`.
fn cache(root: &Path) -> PathBuf {
    let hub = root.join("hub");
    let repo = hub.join("models--Org--Tiny");
    add_snapshot(&repo, MAIN, &model_dir("tiny-b"));
    add_snapshot(&repo, TAGGED, &model_dir("tiny-b"));
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), MAIN).unwrap();
    std::fs::write(repo.join("refs/v1"), TAGGED).unwrap();
    let synth = root.join("synth");
    let o = interlace(
        &["synth", "--train-rows", "4", "--bench-rows", "0", "--out"],
        &[&synth],
        &hub,
    );
    assert_ok(&o);
    let data = hub.join("datasets--Org--Data");
    add_snapshot(&data, MAIN, &synth.join("train"));
    std::fs::create_dir_all(data.join("refs")).unwrap();
    std::fs::write(data.join("refs/main"), MAIN).unwrap();
    hub
}

fn interlace(args: &[&str], paths: &[&Path], hub: &Path) -> Output {
    common::cli()
        .args(args)
        .args(paths)
        .env("HF_HUB_CACHE", hub)
        .env_remove("HF_HOME")
        .output()
        .unwrap()
}

#[test]
fn repository_ids_resolve_to_cached_snapshots() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = cache(tmp.path());
    let repo = hub.join("models--Org--Tiny");
    let r = |s: &str| resolve_in(s, RepoType::Model, &hub);
    assert_eq!(r("Org/Tiny").unwrap(), repo.join("snapshots").join(MAIN));
    assert_eq!(
        r("Org/Tiny@main").unwrap(),
        repo.join("snapshots").join(MAIN)
    );
    assert_eq!(
        r("Org/Tiny@v1").unwrap(),
        repo.join("snapshots").join(TAGGED)
    );
    // A commit hash names its snapshot directly.
    assert_eq!(
        r(&format!("Org/Tiny@{TAGGED}")).unwrap(),
        repo.join("snapshots").join(TAGGED)
    );
    // A revision that is not cached, a repository that is not, and a data set looked up
    // as a model: errors naming where they looked.
    let e = r("Org/Tiny@v2").unwrap_err();
    assert!(e.contains("revision v2") && e.contains("refs/v2"), "{e}");
    let e = r("Org/Other").unwrap_err();
    assert!(e.contains("models--Org--Other"), "{e}");
    assert!(r("Org/Data").is_err());
    assert_eq!(
        resolve_in("Org/Data", RepoType::Dataset, &hub).unwrap(),
        hub.join("datasets--Org--Data/snapshots").join(MAIN)
    );
    // An existing local path wins over the cache; a name that is no repository id is
    // left to the command.
    let local = model_dir("tiny-b");
    let s = local.display().to_string();
    assert_eq!(r(&s).unwrap(), local);
    assert_eq!(r("no-such-dir").unwrap(), PathBuf::from("no-such-dir"));
}

/// The commands take the names: inspect reads the snapshot, prune copies its linked side
/// files as files, similarity reads a cached data set; HF_HOME/hub is the cache when
/// HF_HUB_CACHE is unset; a name not in the cache is a one-line error.
#[test]
fn commands_take_hub_names() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = cache(tmp.path());
    let o = interlace(&["inspect", "--model", "Org/Tiny"], &[], &hub);
    assert_ok(&o);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(MAIN) && text.contains("decoder layers         6"),
        "{text}"
    );

    let plan = tmp.path().join("plan.json");
    interlace::prune::Plan::from_drops(
        "test",
        0.2,
        6,
        vec![3],
        interlace::prune::FinetunePolicy::Paired,
    )
    .unwrap()
    .write(&plan)
    .unwrap();
    let pruned = tmp.path().join("pruned");
    let o = interlace(
        &["prune", "--model", "Org/Tiny@v1", "--plan"],
        &[&plan, Path::new("--out"), &pruned],
        &hub,
    );
    assert_ok(&o);
    for f in [
        "tokenizer.json",
        "chat_template.json",
        "preprocessor_config.json",
    ] {
        let meta = std::fs::symlink_metadata(pruned.join(f)).unwrap();
        assert!(meta.is_file(), "{f}: copied as a file");
        assert_eq!(
            std::fs::read(pruned.join(f)).unwrap(),
            std::fs::read(model_dir("tiny-b").join(f)).unwrap(),
            "{f}"
        );
    }

    let sim = tmp.path().join("sim.json");
    let o = interlace(
        &[
            "similarity",
            "--model",
            "Org/Tiny",
            "--data",
            "Org/Data",
            "--samples",
            "2",
            "--out",
        ],
        &[&sim],
        &hub,
    );
    assert_ok(&o);
    assert!(sim.exists());

    // HF_HOME/hub when HF_HUB_CACHE is not set.
    let o = common::cli()
        .args(["inspect", "--model", "Org/Tiny"])
        .env_remove("HF_HUB_CACHE")
        .env_remove("HUGGINGFACE_HUB_CACHE")
        .env("HF_HOME", tmp.path())
        .output()
        .unwrap();
    assert_ok(&o);

    let o = interlace(&["inspect", "--model", "Org/Missing"], &[], &hub);
    assert_one_line_error(&o, "models--Org--Missing");
    let o = interlace(
        &[
            "similarity",
            "--model",
            "Org/Tiny",
            "--data",
            "Org/NoData",
            "--out",
        ],
        &[&sim],
        &hub,
    );
    assert_one_line_error(&o, "datasets--Org--NoData");
}
