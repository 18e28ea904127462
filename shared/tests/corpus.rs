//! Wikimedia's real schema repositories load, compile and check unchanged.
//! The corpus lives beside the project (`../shared/corpus/wmf-schemas`);
//! `SLUICE_CORPUS` points elsewhere.

use serde_json::Value;
use sluice_shared::{SchemaRegistry, SchemaRepository, Version, check_examples, fs};
use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    std::env::var_os("SLUICE_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/wmf-schemas")
        })
}

fn wikimedia() -> Vec<SchemaRepository> {
    ["primary", "secondary"]
        .iter()
        .map(|name| {
            let (repo, errors) =
                fs::load_dir(&corpus().join(name)).expect("the corpus is readable");
            assert!(errors.is_empty(), "{errors:?}");
            repo
        })
        .collect()
}

#[test]
fn every_version_compiles_and_every_example_validates() {
    let repos = wikimedia();
    let (registry, report) = check_examples(&repos, &[]);
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    assert_eq!(report.summary(), "versions=510 examples=546 failed=0");
    assert_eq!(registry.len(), 510);
    assert_eq!(
        &*registry.resolve("/analytics/test/latest").unwrap().uri,
        "/analytics/test/2.0.0"
    );
    assert_eq!(
        registry
            .resolve("/test/event/1.0.0.yaml")
            .unwrap()
            .repository,
        "primary"
    );
}

#[test]
fn current_sources_resolve_refs_across_repositories() {
    let repos = wikimedia();
    let secondary = &repos[1];
    // Its current.yaml refers to fragments of both repositories.
    let title = "analytics/mediawiki/accountcreation/block";
    let current = &secondary.current[title].document;
    let text = serde_json::to_string(current).unwrap();
    assert!(text.contains("\"$ref\""), "{text}");
    let version =
        Version::parse(current["$id"].as_str().unwrap().rsplit('/').next().unwrap()).unwrap();
    SchemaRegistry::compile_document(&repos, title, version, current)
        .expect("refs resolve in the loaded repositories");

    // Without the primary repository, the same source names the ref it cannot resolve.
    let err =
        SchemaRegistry::compile_document(std::slice::from_ref(secondary), title, version, current)
            .unwrap_err();
    assert!(err.contains("/fragment/"), "{err}");
}

#[test]
fn a_ref_outside_the_repositories_is_a_load_error_not_a_fetch() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/outside_ref");
    let (repo, errors) = fs::load_dir(&dir).unwrap();
    assert!(errors.is_empty());
    let (registry, errors) = SchemaRegistry::load(&[repo]);
    assert!(registry.is_empty());
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, "jsonschema/sluice/leaky/1.0.0.yaml");
    assert!(
        errors[0].message.contains("http://127.0.0.1:9/evil/1.0.0"),
        "{}",
        errors[0].message
    );
    assert!(
        errors[0]
            .message
            .contains("outside the loaded schema repositories"),
        "{}",
        errors[0].message
    );
}

#[test]
fn a_schema_whose_id_names_another_path_resolves_by_both() {
    let (registry, errors) = SchemaRegistry::load(&wikimedia());
    assert!(errors.is_empty(), "{errors:?}");
    let by_folder = registry
        .resolve("/development/webrequest/1.0.0")
        .expect("by its folder");
    let by_id = registry
        .resolve("/webrequest/1.0.0")
        .expect("by its $id, as its events name it");
    assert_eq!(by_folder.uri, by_id.uri);
    assert_eq!(by_id.title, "development/webrequest");
}

#[test]
fn skip_rules_come_from_the_tools_config() {
    let repos = wikimedia();
    let v = |s: &str| Version::parse(s).unwrap();
    assert!(repos[0].skips(
        "mediawiki/recentchange",
        v("1.0.0"),
        "schema-deterministic-types"
    ));
    assert!(repos[0].skips(
        "change-prop/retry",
        v("1.0.0"),
        "schema-deterministic-types"
    ));
    assert!(!repos[0].skips("test/event", v("1.0.0"), "schema-deterministic-types"));
    assert!(repos[1].skips(
        "analytics/legacy/test",
        v("1.1.0"),
        "schema-version-compatibility"
    ));
}

#[test]
fn hostile_schema_files_are_errors() {
    let laughs = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n";
    let files = vec![
        ("jsonschema/a/b/1.0.0.yaml", laughs.as_bytes().to_vec()),
        ("jsonschema/a/c/1.0.0.yaml", b"title: [unclosed".to_vec()),
        ("jsonschema/a/d/1.0.0.json", b"{\"a\":1,\"a\":2}".to_vec()),
        ("jsonschema/a/e/1.0.0.yaml", b"just a string".to_vec()),
    ];
    let (repo, errors) = SchemaRepository::from_files("hostile", files);
    let loaded: Vec<&String> = repo.versions.keys().collect();
    assert!(loaded.is_empty(), "{loaded:?}");
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "jsonschema/a/b/1.0.0.yaml",
            "jsonschema/a/c/1.0.0.yaml",
            "jsonschema/a/d/1.0.0.json",
            "jsonschema/a/e/1.0.0.yaml"
        ]
    );
    assert!(errors.iter().all(|e| !e.message.is_empty()));
    let _: Option<Value> = None;
}

mod never_panics {
    use proptest::prelude::*;
    use sluice_shared::{SchemaRegistry, SchemaRepository, StreamConfig};

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn loading_arbitrary_schema_files(files in proptest::collection::vec((
            prop_oneof![Just("jsonschema/a/b/1.0.0.yaml"), Just("jsonschema/a/b/2.0.0.json"), Just("jsonschema/a/c/current.yaml"), Just(".jsonschema-tools.yaml")],
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..128),
                "\\PC{0,128}".prop_map(String::into_bytes),
                Just(b"type: object\nproperties: {a: {$ref: '#/definitions/x'}}".to_vec()),
                Just(b"{\"$ref\": \"/a/b/1.0.0\"}".to_vec()),
                Just(b"skipSchemaTestCases: {'(': [x]}".to_vec()),
                Just(b"type: object\nproperties: {a: {pattern: '(?<!x)y', type: string}}".to_vec()),
            ],
        ), 0..4)) {
            let (repo, _) = SchemaRepository::from_files("fuzz", files);
            let _ = SchemaRegistry::load(&[repo]);
        }

        #[test]
        fn parsing_arbitrary_stream_config(text in prop_oneof![
            "\\PC{0,256}",
            Just("streams: {a: {schema_title: x/y, windows: [{hours: '23:59-00:00'}], rate_limit: [{events_per_second: 1e308, burst: 4294967295}]}}".to_owned()),
            Just("streams: {'/[/': {schema_title: x/y}}".to_owned()),
            Just("defaults: [1]\nstreams: {a: 7}".to_owned()),
        ]) {
            let _ = StreamConfig::parse(&text);
        }
    }
}
