//! Our own schema repository and the Wikimedia corpus, checked together by the real `sluice` binary.

use sluice_tests::{binary, corpus, workspace};
use std::process::Command;

#[test]
fn our_repository_checks_clean_beside_wikimedias() {
    let out = Command::new(binary("sluice"))
        .args(["schema", "examples", "--repo"])
        .arg(workspace().join("schemas"))
        .arg("--repo")
        .arg(corpus().join("primary"))
        .output()
        .expect("sluice runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = stdout.lines().last().unwrap_or_default();
    let fields: Vec<(&str, usize)> = summary
        .split(' ')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k, v.parse().unwrap_or(usize::MAX)))
        .collect();
    // Our versions come first and shadow none of the 83 primary versions.
    assert_eq!(fields[0].0, "versions");
    assert!(fields[0].1 > 83, "{summary}");
    assert_eq!(fields[2], ("failed", 0), "{summary}");
}

#[test]
fn the_default_stream_config_takes_only_loaded_schemas() {
    use sluice_shared::{SchemaRegistry, SchemaUri, StreamConfig, VersionSpec, fs};
    let text = std::fs::read_to_string(workspace().join("schemas/streams.yaml"))
        .expect("schemas/streams.yaml is readable");
    let streams = StreamConfig::parse(&text).unwrap_or_else(|e| panic!("{e:?}"));
    let (repo, errors) = fs::load_dir(&workspace().join("schemas")).expect("schemas/ is readable");
    assert!(errors.is_empty(), "{errors:?}");
    let (registry, errors) = SchemaRegistry::load(&[repo]);
    assert!(errors.is_empty(), "{errors:?}");
    let mut count = 0;
    for entry in streams.entries() {
        let latest = SchemaUri {
            title: entry.settings.schema_title.clone(),
            version: VersionSpec::Latest,
        };
        assert!(
            registry.get(&latest).is_ok(),
            "stream `{}` takes `{}`, which is not in schemas/",
            entry.key,
            latest.title
        );
        count += 1;
    }
    assert!(count > 0);
}
