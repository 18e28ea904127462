//! `sluice schema materialize|lint|compat|check|new|bump|bundle`, run as the
//! real binary against the Wikimedia repositories (copied where a command
//! writes) and against seeded fixtures.

use serde_json::Value;
use sluice_shared::parse_document;
use sluice_tests::{Scratch, binary, corpus, http_call, workspace};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sluice(args: &[&str], paths: &[&Path]) -> Output {
    let mut cmd = Command::new(binary("sluice"));
    cmd.args(args);
    for p in paths {
        cmd.arg(p);
    }
    cmd.current_dir(workspace());
    cmd.output().expect("sluice runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

/// The `key=value` fields of a summary line.
fn summary(out: &Output) -> Vec<(String, String)> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default().to_owned();
    last.split(' ')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn field(out: &Output, key: &str) -> String {
    summary(out)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {key}= in: {}", text(out)))
}

/// Copies a folder, links as links, every file writable.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create folder");
    for entry in std::fs::read_dir(from).expect("read folder").flatten() {
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let meta = std::fs::symlink_metadata(&src).expect("stat");
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&src).expect("read link");
            std::os::unix::fs::symlink(target, &dst).expect("make link");
        } else if meta.is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::write(&dst, std::fs::read(&src).expect("read")).expect("write");
        }
    }
}

fn yaml(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_document(&bytes, "yaml").unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn link(path: &Path) -> String {
    std::fs::read_link(path)
        .unwrap_or_else(|e| panic!("{} is not a link: {e}", path.display()))
        .to_string_lossy()
        .into_owned()
}

#[test]
fn wikimedia_repositories_lint_and_compare_clean() {
    let (primary, secondary) = (corpus().join("primary"), corpus().join("secondary"));
    let out = sluice(
        &["schema", "check", "--format", "json", "--repo"],
        &[&primary, Path::new("--repo"), &secondary],
    );
    assert!(out.status.success(), "{}", text(&out));
    let report = json(&out);
    // 136 files in the primary repository, 576 in the secondary (versions and current.yaml).
    assert_eq!(report["schemas"], 712, "{report}");
    assert_eq!(report["lint_findings"], 0, "{report}");
    assert_eq!(report["pairs"], 240, "{report}");
    assert_eq!(report["compat_breaks"], 0, "{report}");
    // The one schema whose $id is not its folder is a warning, in both its files.
    let findings = report["findings"].as_array().expect("findings");
    assert_eq!(findings.len(), 2, "{report}");
    for f in findings {
        assert_eq!(f["severity"], "warning");
        assert_eq!(f["rule"], "schema-id-matches-path");
        assert!(
            f["file"]
                .as_str()
                .is_some_and(|p| p.starts_with("jsonschema/development/webrequest/")),
            "{f}"
        );
    }
}

#[test]
fn materializing_wikimedia_current_files_matches_their_latest_versions() {
    let (primary, secondary) = (corpus().join("primary"), corpus().join("secondary"));
    let out = sluice(&["schema", "materialize", "--check", "--repo"], &[&primary]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        (field(&out, "compared"), field(&out, "matched")),
        ("53".into(), "53".into())
    );
    // The secondary repository's $refs reach into the primary.
    let out = sluice(
        &["schema", "materialize", "--check", "--repo"],
        &[&secondary, Path::new("--repo"), &primary],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        (field(&out, "compared"), field(&out, "matched")),
        ("149".into(), "149".into())
    );
}

#[test]
fn materialize_writes_versions_and_links_in_the_same_layout() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let (primary, secondary) = (dir.path().join("primary"), dir.path().join("secondary"));
    copy_tree(&corpus().join("primary"), &primary);
    copy_tree(&corpus().join("secondary"), &secondary);
    // Remove what materializing makes, for one schema in each repository.
    let one = primary.join("jsonschema/test/event");
    let two = secondary.join("jsonschema/rdf_streaming_updater/reconcile");
    let two_latest = yaml(&two.join("current.yaml"))["$id"]
        .as_str()
        .and_then(|id| id.rsplit('/').next())
        .expect("a version")
        .to_owned();
    let before = (
        yaml(&one.join("1.0.0.yaml")),
        yaml(&two.join(format!("{two_latest}.yaml"))),
    );
    for (d, v) in [(&one, "1.0.0"), (&two, two_latest.as_str())] {
        for f in [
            format!("{v}.yaml"),
            v.to_owned(),
            "latest".into(),
            "latest.yaml".into(),
        ] {
            std::fs::remove_file(d.join(f)).expect("remove");
        }
    }
    let out = sluice(&["schema", "materialize"], &[&one.join("current.yaml")]);
    assert!(out.status.success(), "{}", text(&out));
    // The secondary schema's $refs reach into the primary: without it, a clear failure.
    let out = sluice(&["schema", "materialize"], &[&two.join("current.yaml")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("/fragment/"), "{}", text(&out));
    let out = sluice(
        &["schema", "materialize", "--repo"],
        &[&primary, &two.join("current.yaml")],
    );
    assert!(out.status.success(), "{}", text(&out));
    let after_one = yaml(&one.join("1.0.0.yaml"));
    let after_two = yaml(&two.join(format!("{two_latest}.yaml")));
    let without_examples = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("examples");
        }
        v
    };
    assert_eq!(after_one, before.0);
    assert_eq!(without_examples(&after_two), without_examples(&before.1));
    for d in [&one, &two] {
        let v = if d == &one {
            "1.0.0"
        } else {
            two_latest.as_str()
        };
        assert_eq!(link(&d.join(v)), format!("{v}.yaml"));
        assert_eq!(link(&d.join("latest")), format!("{v}.yaml"));
        assert_eq!(link(&d.join("latest.yaml")), format!("{v}.yaml"));
    }
    // The repositories still lint clean with what was written.
    let out = sluice(
        &["schema", "lint", "--repo"],
        &[&primary, Path::new("--repo"), &secondary],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(field(&out, "findings"), "0");
}

/// The rule each seeded fixture directory breaks.
fn seeded_rule(dir: &str) -> String {
    match dir {
        "examples_schema_matches_id" => "schema-examples-$schema-matches-schema-$id".into(),
        d => format!("schema-{}", d.replace('_', "-")),
    }
}

/// GitHub's anchor for a markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn lint_reports_every_seeded_violation_with_file_rule_and_hint() {
    let fixture = workspace().join("tests/fixtures/schema-lint");
    let out = sluice(
        &["schema", "lint", "--format", "json", "--repo"],
        &[&fixture],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = json(&out);
    let findings = report["findings"].as_array().expect("findings").clone();
    let guidelines = std::fs::read_to_string(workspace().join("docs/schema-guidelines.md"))
        .expect("docs/schema-guidelines.md");
    let anchors: Vec<String> = guidelines
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(anchor)
        .collect();
    let seeded: Vec<String> = std::fs::read_dir(fixture.join("jsonschema/seeded"))
        .expect("seeded fixtures")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(seeded.len(), 14, "{seeded:?}");
    for dir in &seeded {
        let mine: Vec<&Value> = findings
            .iter()
            .filter(|f| {
                f["file"]
                    .as_str()
                    .is_some_and(|p| p.starts_with(&format!("jsonschema/seeded/{dir}/")))
            })
            .collect();
        if dir == "skipped_snake_case" {
            assert!(mine.is_empty(), "skipSchemaTestCases ignored: {mine:?}");
            continue;
        }
        let rule = seeded_rule(dir);
        let hit = mine
            .iter()
            .find(|f| f["rule"] == rule.as_str())
            .unwrap_or_else(|| panic!("{dir}: no {rule} finding in {mine:?}"));
        assert_eq!(hit["severity"], "error");
        assert!(hit["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(hit["hint"].as_str().is_some_and(|h| h.len() > 20), "{hit}");
        let doc = hit["doc"].as_str().expect("doc link");
        let (file, section) = doc.split_once('#').expect("an anchor");
        assert_eq!(file, "docs/schema-guidelines.md");
        assert!(
            anchors.iter().any(|a| a == section),
            "{doc} has no heading in the guidelines"
        );
    }
    assert!(
        !findings
            .iter()
            .any(|f| f["file"].as_str().is_some_and(|p| p.contains("/valid/"))),
        "the valid schema was flagged: {findings:?}"
    );
    assert_eq!(report["skipped"], 2, "{report}");
    // The same for people: file, rule and fix on the lines.
    let out = sluice(&["schema", "lint", "--repo"], &[&fixture]);
    let t = text(&out);
    assert!(t.contains("jsonschema/seeded/snake_case_properties/1.0.0.yaml: error: schema-snake-case-properties at #/properties/userName"), "{t}");
    assert!(
        t.contains("    fix: rename the property to snake_case"),
        "{t}"
    );
}

#[test]
fn compat_reports_each_seeded_break_at_its_path() {
    let fixture = workspace().join("tests/fixtures/schema-compat");
    let out = sluice(
        &["schema", "compat", "--format", "json", "--repo"],
        &[&fixture],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = json(&out);
    assert_eq!(report["pairs"], 2, "{report}");
    assert_eq!(report["skipped"], 1, "{report}");
    let mut paths: Vec<&str> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .inspect(|f| assert_eq!(f["file"], "jsonschema/seeded/breaking/1.1.0.yaml", "{f}"))
        .filter_map(|f| f["at"].as_str())
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "#/properties/gone",
            "#/properties/kept/type",
            "#/properties/label/enum",
            "#/properties/name/maxLength",
            "#/required"
        ]
    );
}

#[test]
fn new_and_bump_cut_versions_and_refuse_breaking_ones() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let repo = dir.path().join("schemas");
    copy_tree(&workspace().join("schemas"), &repo);
    let schema = repo.join("jsonschema/shop/checkout/step");
    let out = sluice(&["schema", "new"], &[&schema]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(link(&schema.join("latest")), "1.0.0.yaml");
    let check = |repo: &PathBuf| {
        let out = sluice(&["schema", "check", "--repo"], &[repo]);
        assert!(out.status.success(), "{}", text(&out));
    };
    check(&repo);
    // Starting it twice is refused.
    let out = sluice(&["schema", "new"], &[&schema]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    let current = schema.join("current.yaml");
    let edit = |from: &str, to: &str| {
        let s = std::fs::read_to_string(&current).expect("current.yaml");
        assert!(s.contains(from), "{s}");
        std::fs::write(&current, s.replacen(from, to, 1)).expect("write");
    };
    // An optional field: a minor version.
    edit(
        "examples:",
        "  - properties:\n      step:\n        description: Which step.\n        type: integer\n        minimum: 1\nexamples:",
    );
    let out = sluice(&["schema", "bump"], &[&schema]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        yaml(&schema.join("1.1.0.yaml"))["$id"],
        "/shop/checkout/step/1.1.0"
    );
    assert_eq!(yaml(&current)["$id"], "/shop/checkout/step/1.1.0");
    assert_eq!(link(&schema.join("latest")), "1.1.0.yaml");
    check(&repo);

    // Making it required breaks 1.1.0: refused, nothing written.
    edit(
        "  - properties:\n      step:",
        "  - required: [step]\n    properties:\n      step:",
    );
    let edited = std::fs::read_to_string(&current).expect("current.yaml");
    let out = sluice(&["schema", "bump"], &[&current]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("#/required"), "{}", text(&out));
    assert!(!schema.join("1.2.0.yaml").exists());
    assert_eq!(std::fs::read_to_string(&current).expect("current"), edited);

    // As a new major version it is allowed, once its example has the field.
    let out = sluice(&["schema", "bump", "--part", "major"], &[&current]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("\"step\" is a required property"),
        "{}",
        text(&out)
    );
    assert!(!schema.join("2.0.0.yaml").exists());
    edit("    meta:", "    step: 2\n    meta:");
    let out = sluice(&["schema", "bump", "--part", "major"], &[&current]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        yaml(&schema.join("2.0.0.yaml"))["required"]
            .as_array()
            .map(|r| r.iter().any(|v| v == "step")),
        Some(true)
    );
    assert_eq!(link(&schema.join("latest.yaml")), "2.0.0.yaml");
    check(&repo);
}

#[test]
fn bundle_is_what_edges_load_and_bad_input_is_refused() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let out_file = dir.path().join("bundle.json");
    let out = sluice(
        &[
            "schema",
            "bundle",
            "--repo",
            "schemas",
            "--streams",
            "schemas/streams.yaml",
            "-o",
        ],
        &[&out_file],
    );
    assert!(out.status.success(), "{}", text(&out));
    let bundle: sluice_shared::Bundle =
        serde_json::from_slice(&std::fs::read(&out_file).expect("bundle written"))
            .expect("a bundle");
    let (registry, streams) = bundle.load().expect("the bundle loads");
    assert!(registry.resolve("/sluice/test/event/1.0.0").is_ok());
    assert!(streams.get("sluice.test.event").is_some());

    // An aggregator given the file serves exactly that bundle to its edges.
    let scratch = Scratch::new("local.test.event");
    let aggregator = scratch.aggregator(
        "t0k3n",
        &[("SLUICE_AGGREGATOR_BUNDLE", out_file.as_os_str())],
    );
    let reply = http_call(aggregator.http, "GET", "/v1/bundle", &[], b"").expect("GET /v1/bundle");
    assert_eq!(reply.status, 200);
    let served: sluice_shared::Bundle = serde_json::from_slice(&reply.body).expect("a bundle");
    assert_eq!(served, bundle);
    drop(aggregator);

    // A stream config naming an unknown setting: refused with the reason, nothing written.
    let bad = dir.path().join("streams.yaml");
    std::fs::write(
        &bad,
        "local.test.event:\n  schema_title: sluice/test/event\n  sample: nope\n",
    )
    .expect("write");
    let refused = dir.path().join("refused.json");
    let out = sluice(
        &["schema", "bundle", "--repo", "schemas", "--streams"],
        &[&bad, Path::new("-o"), &refused],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("sample"), "{}", text(&out));
    assert!(!refused.exists());

    // A repository that is not there: exit 2, naming it.
    let out = sluice(&["schema", "lint", "--repo", "no/such/repository"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no/such/repository"), "{}", text(&out));
}

#[test]
fn new_bump_and_bundle_work_on_wikimedias_repositories() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let (primary, secondary) = (dir.path().join("primary"), dir.path().join("secondary"));
    copy_tree(&corpus().join("primary"), &primary);
    copy_tree(&corpus().join("secondary"), &secondary);
    // A new schema in the secondary repository builds on the primary's fragment.
    let schema = secondary.join("jsonschema/analytics/sluice_trial/click");
    let out = sluice(
        &["schema", "new"],
        &[&schema, Path::new("--repo"), &primary],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        std::fs::read_to_string(schema.join("current.yaml"))
            .expect("current.yaml")
            .contains("$ref: /fragment/common/")
    );
    let current = schema.join("current.yaml");
    let s = std::fs::read_to_string(&current).expect("current.yaml");
    std::fs::write(
        &current,
        s.replacen(
            "examples:",
            "  - properties:\n      target:\n        description: What was clicked.\n        type: string\nexamples:",
            1,
        ),
    )
    .expect("write");
    let out = sluice(
        &["schema", "bump"],
        &[&schema, Path::new("--repo"), &primary],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(link(&schema.join("latest")), "1.1.0.yaml");
    let out = sluice(
        &["schema", "check", "--format", "json", "--repo"],
        &[&primary, Path::new("--repo"), &secondary],
    );
    assert!(out.status.success(), "{}", text(&out));
    let report = json(&out);
    assert_eq!(report["lint_findings"], 0, "{report}");
    assert_eq!(report["pairs"], 241, "{report}");

    // The bundle of both repositories, with a stream taking the new schema, loads.
    let streams = dir.path().join("streams.yaml");
    std::fs::write(
        &streams,
        "streams:\n  sluice_trial.click:\n    schema_title: analytics/sluice_trial/click\n",
    )
    .expect("write");
    let bundle_file = dir.path().join("bundle.json");
    let out = sluice(
        &["schema", "bundle", "--repo"],
        &[
            &primary,
            Path::new("--repo"),
            &secondary,
            Path::new("--streams"),
            &streams,
            Path::new("-o"),
            &bundle_file,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let bundle: sluice_shared::Bundle =
        serde_json::from_slice(&std::fs::read(&bundle_file).expect("bundle")).expect("a bundle");
    let (registry, _) = bundle.load().expect("the bundle loads");
    assert!(
        registry
            .resolve("/analytics/sluice_trial/click/1.1.0")
            .is_ok()
    );
    assert!(registry.resolve("/analytics/test/1.0.0").is_ok());
}
