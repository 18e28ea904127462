//! Checks that every example of every loaded schema version validates against
//! its version, the way jsonschema-tools' `schema-examples-validate` test does.

use crate::registry::{SchemaLoadError, SchemaRegistry};
use crate::repository::{RepositoryError, SchemaRepository};
use crate::validation::Violations;
use serde_json::Value;

/// The jsonschema-tools test case name that `.jsonschema-tools.yaml` may skip.
pub const EXAMPLES_CASE: &str = "schema-examples-validate";

/// One example, or one schema, that failed.
#[derive(Debug, Clone)]
pub struct ExampleFailure {
    /// `repository: path` of the schema file.
    pub file: String,
    /// Index of the example in `examples`, if the failure is an example's.
    pub example: Option<usize>,
    /// What failed.
    pub errors: String,
}

/// The result of checking every example.
#[derive(Debug, Clone, Default)]
pub struct ExamplesReport {
    /// Materialized versions found.
    pub versions: usize,
    /// Versions that compiled.
    pub compiled: usize,
    /// Examples checked.
    pub examples: usize,
    /// Examples skipped by `skipSchemaTestCases`.
    pub skipped: usize,
    /// Everything that failed, load and compile errors included.
    pub failures: Vec<ExampleFailure>,
}

impl ExamplesReport {
    /// `versions=N examples=M failed=K`.
    pub fn summary(&self) -> String {
        format!(
            "versions={} examples={} failed={}",
            self.versions,
            self.examples,
            self.failures.len()
        )
    }
}

/// Loads `repos` together and validates every example of every version.
pub fn check_examples(
    repos: &[SchemaRepository],
    read_errors: &[RepositoryError],
) -> (SchemaRegistry, ExamplesReport) {
    let (registry, load_errors) = SchemaRegistry::load(repos);
    let mut report = ExamplesReport {
        versions: repos.iter().map(SchemaRepository::version_count).sum(),
        compiled: registry.len(),
        ..Default::default()
    };
    for e in read_errors {
        report.failures.push(ExampleFailure {
            file: format!("{}: {}", e.repository, e.path),
            example: None,
            errors: e.message.clone(),
        });
    }
    for SchemaLoadError {
        repository,
        path,
        message,
    } in load_errors
    {
        report.failures.push(ExampleFailure {
            file: format!("{repository}: {path}"),
            example: None,
            errors: message,
        });
    }
    for schema in registry.iter() {
        let repo = repos.iter().find(|r| r.name == schema.repository);
        let skip = repo.is_some_and(|r| r.skips(&schema.title, schema.version, EXAMPLES_CASE));
        let Some(examples) = schema.document.get("examples").and_then(Value::as_array) else {
            continue;
        };
        for (i, example) in examples.iter().enumerate() {
            if skip {
                report.skipped += 1;
                continue;
            }
            report.examples += 1;
            if let Err(v) = schema.validate(example) {
                report.failures.push(ExampleFailure {
                    file: format!("{}: {}", schema.repository, schema.path),
                    example: Some(i),
                    errors: Violations::errors_text(&v),
                });
            }
        }
    }
    report
        .failures
        .sort_by(|a, b| (&a.file, a.example).cmp(&(&b.file, b.example)));
    (registry, report)
}
