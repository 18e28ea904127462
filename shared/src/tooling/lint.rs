//! The repository lint: jsonschema-tools' structure and robustness tests,
//! each a named rule that `.jsonschema-tools.yaml` `skipSchemaTestCases` can
//! skip per schema, each finding naming the file, the rule, where in the
//! schema, and how to fix it.

use super::materialize::{Materializer, id_version, schema_paths};
use super::same_schema;
use crate::registry::SchemaRegistry;
use crate::repository::{SchemaFile, SchemaRepository};
use crate::schema_uri::Version;
use crate::validation::Violations;
use serde_json::Value;
use std::collections::BTreeMap;

/// A lint rule. The names are jsonschema-tools' test case names where it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// The `title` field equals the schema's directory.
    TitleMatchesDirectory,
    /// `$id` is `/<directory>/<version>` and the file is named for that version.
    IdMatchesPath,
    /// A schema directory holds a `current.yaml`.
    HasCurrent,
    /// `current.yaml` has the latest version, and materializes to the latest file.
    LatestMatchesCurrent,
    /// Every version has a file per configured content type.
    ContentTypes,
    /// Extensionless and `latest` links point where they should.
    Symlinks,
    /// The materialized schema is a valid draft-07 JSONSchema.
    IsValid,
    /// Property names are snake_case.
    SnakeCaseProperties,
    /// No union types; arrays name their item type; objects have properties or a map type.
    DeterministicTypes,
    /// Every `required` property is declared.
    RequiredPropertiesExist,
    /// Every number has a `minimum` and `maximum` inside the enforced bounds.
    EnforcedNumericBounds,
    /// Each example's `$schema` equals the schema's `$id`.
    ExamplesSchemaMatchesId,
    /// Each example validates against its schema.
    ExamplesAreValid,
}

impl Rule {
    /// Every rule, in report order.
    pub const ALL: [Rule; 13] = [
        Rule::TitleMatchesDirectory,
        Rule::IdMatchesPath,
        Rule::HasCurrent,
        Rule::LatestMatchesCurrent,
        Rule::ContentTypes,
        Rule::Symlinks,
        Rule::IsValid,
        Rule::SnakeCaseProperties,
        Rule::DeterministicTypes,
        Rule::RequiredPropertiesExist,
        Rule::EnforcedNumericBounds,
        Rule::ExamplesSchemaMatchesId,
        Rule::ExamplesAreValid,
    ];

    /// The rule's name, as `skipSchemaTestCases` and `--format json` spell it.
    pub fn name(self) -> &'static str {
        match self {
            Rule::TitleMatchesDirectory => "schema-title-matches-directory",
            Rule::IdMatchesPath => "schema-id-matches-path",
            Rule::HasCurrent => "schema-has-current",
            Rule::LatestMatchesCurrent => "schema-latest-matches-current",
            Rule::ContentTypes => "schema-content-types",
            Rule::Symlinks => "schema-symlinks",
            Rule::IsValid => "schema-is-valid",
            Rule::SnakeCaseProperties => "schema-snake-case-properties",
            Rule::DeterministicTypes => "schema-deterministic-types",
            Rule::RequiredPropertiesExist => "schema-required-properties-exist",
            Rule::EnforcedNumericBounds => "schema-enforced-numeric-bounds",
            Rule::ExamplesSchemaMatchesId => "schema-examples-$schema-matches-schema-$id",
            Rule::ExamplesAreValid => "schema-examples-are-valid",
        }
    }

    /// How to fix a finding of this rule.
    pub fn hint(self) -> &'static str {
        match self {
            Rule::TitleMatchesDirectory => {
                "set `title` to the directory path under the repository's schema base, e.g. `analytics/button_click` for jsonschema/analytics/button_click/"
            }
            Rule::IdMatchesPath => {
                "set `$id` to `/<title>/<version>` and name materialized files `<version>.yaml`"
            }
            Rule::HasCurrent => {
                "add the editable source as current.yaml (`sluice schema new` starts one)"
            }
            Rule::LatestMatchesCurrent => {
                "run `sluice schema bump` (or `sluice schema materialize`) after editing current.yaml, and never edit materialized files by hand"
            }
            Rule::ContentTypes => {
                "run `sluice schema materialize` to write every content type listed in `.jsonschema-tools.yaml` contentTypes"
            }
            Rule::Symlinks => {
                "run `sluice schema materialize`, which links `X.Y.Z` to `X.Y.Z.yaml` and `latest` to the highest version"
            }
            Rule::IsValid => "fix the schema so that it is a valid draft-07 JSONSchema",
            Rule::SnakeCaseProperties => {
                "rename the property to snake_case: lower-case letters, digits and `_`, starting with a letter"
            }
            Rule::DeterministicTypes => {
                "give the field exactly one `type`; arrays need `items.type`, objects need `properties` or `additionalProperties` with a type"
            }
            Rule::RequiredPropertiesExist => {
                "declare the property under `properties`, or drop it from `required`"
            }
            Rule::EnforcedNumericBounds => {
                "give the number a `minimum` and `maximum` inside the enforced bounds (materializing adds ±(2^53−1) where none is set)"
            }
            Rule::ExamplesSchemaMatchesId => {
                "write the example's `$schema` as `{$ref: '#/$id'}` in current.yaml so that it always equals the `$id`"
            }
            Rule::ExamplesAreValid => "fix the example or the schema so that the example validates",
        }
    }

    /// The section of docs/schema-guidelines.md that explains the rule.
    pub fn doc(self) -> String {
        format!("docs/schema-guidelines.md#{}", self.name().replace('$', ""))
    }
}

/// One rule broken by one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The rule.
    pub rule: Rule,
    /// The file, relative to its repository.
    pub file: String,
    /// Where in the schema, as a JSON pointer, when the rule points somewhere.
    pub at: Option<String>,
    /// What is wrong.
    pub message: String,
    /// A warning: reported, but the lint still passes.
    pub warning: bool,
}

/// What the lint checked and found.
#[derive(Debug, Clone, Default)]
pub struct LintReport {
    /// Schema files checked (materialized versions and current.yaml).
    pub schemas: usize,
    /// Rule checks skipped by `skipSchemaTestCases`.
    pub skipped: usize,
    /// Rules broken.
    pub findings: Vec<Finding>,
}

/// The files of each schema directory, for the rules that look at files
/// rather than schemas: name → link target (`None` for a regular file).
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Directory (title path) → file name → link target.
    pub dirs: BTreeMap<String, BTreeMap<String, Option<String>>>,
}

struct Ctx<'a> {
    repo: &'a SchemaRepository,
    report: LintReport,
}

impl Ctx<'_> {
    fn check(
        &mut self,
        title: &str,
        version: Option<Version>,
        rule: Rule,
        file: &SchemaFile,
        run: impl FnOnce() -> Vec<(Option<String>, String)>,
    ) {
        self.check_as(title, version, rule, file, false, run);
    }

    fn check_as(
        &mut self,
        title: &str,
        version: Option<Version>,
        rule: Rule,
        file: &SchemaFile,
        warning: bool,
        run: impl FnOnce() -> Vec<(Option<String>, String)>,
    ) {
        let by_id = file
            .document
            .get("$id")
            .and_then(Value::as_str)
            .is_some_and(|id| self.repo.skips_id(id, rule.name()));
        if by_id || version.is_some_and(|v| self.repo.skips(title, v, rule.name())) {
            self.report.skipped += 1;
            return;
        }
        for (at, message) in run() {
            self.report.findings.push(Finding {
                rule,
                file: file.path.clone(),
                at,
                message,
                warning,
            });
        }
    }
}

/// Lints `repos[index]`, resolving `$ref`s in all of `repos` (that one first).
/// `listing` enables the file rules (content types and links).
pub fn lint(repos: &[SchemaRepository], index: usize, listing: Option<&Listing>) -> LintReport {
    let Some(repo) = repos.get(index) else {
        return LintReport::default();
    };
    let order = std::iter::once(repo).chain(
        repos
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .map(|(_, r)| r),
    );
    let materializer = Materializer::new(order);
    let mut ctx = Ctx {
        repo,
        report: LintReport::default(),
    };
    let mut titles: Vec<&String> = repo.versions.keys().chain(repo.current.keys()).collect();
    titles.sort();
    titles.dedup();
    for title in titles {
        let versions = repo.versions.get(title);
        let current = repo.current.get(title);
        if let Some(versions) = versions {
            for (version, file) in versions {
                ctx.report.schemas += 1;
                lint_materialized(&mut ctx, repos, title, *version, file);
            }
        }
        let latest = versions.and_then(|v| v.iter().next_back());
        match current {
            Some(file) => {
                ctx.report.schemas += 1;
                lint_current(&mut ctx, &materializer, title, file, latest);
            }
            None => {
                if let Some((v, file)) = latest {
                    ctx.check(title, Some(*v), Rule::HasCurrent, file, || {
                        vec![(None, format!("{title}/ has versions but no current.yaml"))]
                    });
                }
            }
        }
        if let (Some(listing), Some(versions)) = (listing, versions) {
            lint_files(&mut ctx, title, versions, listing.dirs.get(title.as_str()));
        }
    }
    ctx.report
        .findings
        .sort_by(|a, b| (&a.file, a.rule, &a.at).cmp(&(&b.file, b.rule, &b.at)));
    ctx.report
}

fn shared_rules(ctx: &mut Ctx<'_>, title: &str, version: Option<Version>, file: &SchemaFile) {
    let doc = &file.document;
    ctx.check(
        title,
        version,
        Rule::TitleMatchesDirectory,
        file,
        || match doc.get("title").and_then(Value::as_str) {
            Some(t) if t == title => vec![],
            Some(t) => vec![(
                Some("/title".to_owned()),
                format!("title is `{t}` but the schema is in {title}/"),
            )],
            None => vec![(
                Some("/title".to_owned()),
                "the schema has no title".to_owned(),
            )],
        },
    );
    ctx.check(title, version, Rule::SnakeCaseProperties, file, || {
        let mut out = Vec::new();
        snake_case(doc, &mut String::new(), &mut out);
        out
    });
}

fn lint_materialized(
    ctx: &mut Ctx<'_>,
    repos: &[SchemaRepository],
    title: &str,
    version: Version,
    file: &SchemaFile,
) {
    let doc = &file.document;
    let v = Some(version);
    shared_rules(ctx, title, v, file);
    id_rule(ctx, title, v, file);
    ctx.check(title, v, Rule::DeterministicTypes, file, || {
        let mut out = Vec::new();
        deterministic(doc, "#", &mut out);
        out
    });
    ctx.check(title, v, Rule::RequiredPropertiesExist, file, || {
        let mut out = Vec::new();
        required_exist(doc, "#", &mut out);
        out
    });
    if let Some((lo, hi)) = ctx.repo.tools.numeric_bounds {
        ctx.check(title, v, Rule::EnforcedNumericBounds, file, || {
            numeric_bounds(doc, lo, hi)
        });
    }
    let examples = doc.get("examples").and_then(Value::as_array);
    if let Some(examples) = examples
        && doc.pointer("/properties/$schema").is_some()
    {
        ctx.check(title, v, Rule::ExamplesSchemaMatchesId, file, || {
            examples
                .iter()
                .enumerate()
                .filter(|(_, e)| e.get("$schema") != doc.get("$id"))
                .map(|(i, e)| {
                    (
                        Some(format!("/examples/{i}/$schema")),
                        format!(
                            "example {i} has $schema {} but the schema's $id is {}",
                            e.get("$schema")
                                .map_or("(none)".to_owned(), Value::to_string),
                            doc.get("$id").map_or("(none)".to_owned(), Value::to_string)
                        ),
                    )
                })
                .collect()
        });
    }
    let compiled = SchemaRegistry::compile_standalone(repos, title, version, doc);
    ctx.check(title, v, Rule::IsValid, file, || match &compiled {
        Ok(_) => vec![],
        Err(e) => vec![(None, e.clone())],
    });
    if let (Some(examples), Ok(schema)) = (examples, &compiled) {
        ctx.check(title, v, Rule::ExamplesAreValid, file, || {
            examples
                .iter()
                .enumerate()
                .filter_map(|(i, e)| {
                    schema.validate(e).err().map(|v| {
                        (
                            Some(format!("/examples/{i}")),
                            format!(
                                "example {i} does not validate: {}",
                                Violations::errors_text(&v)
                            ),
                        )
                    })
                })
                .collect()
        });
    }
}

/// `$id` must be `/<directory>/<version of the file>`. A wrong or missing
/// version is an error; a path other than the directory only a warning,
/// since jsonschema-tools allows it, but such a schema is served (and must be
/// named in events) by its directory path.
fn id_rule(ctx: &mut Ctx<'_>, title: &str, version: Option<Version>, file: &SchemaFile) {
    let doc = &file.document;
    let id = doc.get("$id").and_then(Value::as_str);
    let is_current = file.path.ends_with("current.yaml");
    let file_version = if is_current { id_version(doc) } else { version };
    let at = Some("/$id".to_owned());
    ctx.check(title, version, Rule::IdMatchesPath, file, || {
        match (id, file_version) {
            (None, _) => vec![(at.clone(), "the schema has no $id".to_owned())],
            (Some(id), Some(v)) if id.rsplit('/').next() == Some(v.to_string().as_str()) => vec![],
            (Some(id), _) if is_current => vec![(
                at.clone(),
                format!("$id `{id}` does not end in an X.Y.Z version"),
            )],
            (Some(id), Some(v)) => vec![(
                at.clone(),
                format!("$id `{id}` names another version than the file's {v}"),
            )],
            (Some(id), None) => vec![(at.clone(), format!("$id `{id}` has no version"))],
        }
    });
    let Some(id) = id else { return };
    let path = id.rsplit_once('/').map_or("", |(p, _)| p);
    if path != format!("/{title}") {
        ctx.check_as(title, version, Rule::IdMatchesPath, file, true, || {
            vec![(
                at.clone(),
                format!(
                    "$id `{id}` is not under /{title}/; Sluice resolves both, but jsonschema-tools and schema services find a schema by its folder"
                ),
            )]
        });
    }
}

fn lint_current(
    ctx: &mut Ctx<'_>,
    materializer: &Materializer<'_>,
    title: &str,
    file: &SchemaFile,
    latest: Option<(&Version, &SchemaFile)>,
) {
    let doc = &file.document;
    let version = id_version(doc);
    shared_rules(ctx, title, version, file);
    id_rule(ctx, title, version, file);
    let Some((latest_version, latest_file)) = latest else {
        ctx.check(title, version, Rule::LatestMatchesCurrent, file, || {
            vec![(
                None,
                "current.yaml was never materialized: there is no version file".to_owned(),
            )]
        });
        return;
    };
    let tools = ctx.repo.tools.clone();
    ctx.check(title, version, Rule::LatestMatchesCurrent, file, || {
        if version != Some(*latest_version) {
            return vec![(
                Some("/$id".to_owned()),
                format!(
                    "current.yaml is version {} but the latest materialized version is {latest_version}",
                    version.map_or("(none)".to_owned(), |v| v.to_string())
                ),
            )];
        }
        match materializer.materialize(doc, &tools) {
            Err(e) => vec![(None, format!("current.yaml does not materialize: {e}"))],
            Ok(m) => {
                let skip_examples = m.generated_example || doc.get("examples").is_none();
                if same_schema(&m.schema, &latest_file.document, skip_examples) {
                    vec![]
                } else {
                    let at = super::first_difference(&m.schema, &latest_file.document);
                    vec![(
                        at.clone(),
                        format!(
                            "current.yaml materializes to something other than {} (first difference at {})",
                            latest_file.path,
                            at.unwrap_or_default()
                        ),
                    )]
                }
            }
        }
    });
}

fn lint_files(
    ctx: &mut Ctx<'_>,
    title: &str,
    versions: &BTreeMap<Version, SchemaFile>,
    files: Option<&BTreeMap<String, Option<String>>>,
) {
    let empty = BTreeMap::new();
    let files = files.unwrap_or(&empty);
    let tools = ctx.repo.tools.clone();
    let Some(first) = tools.content_types.first().cloned() else {
        return;
    };
    for (version, file) in versions {
        let v = Some(*version);
        ctx.check(title, v, Rule::ContentTypes, file, || {
            tools
                .content_types
                .iter()
                .filter(|t| !files.contains_key(&format!("{version}.{t}")))
                .map(|t| (None, format!("{title}/{version}.{t} is missing")))
                .collect()
        });
        if tools.link_extensionless {
            ctx.check(title, v, Rule::Symlinks, file, || {
                link_problem(files, &version.to_string(), &format!("{version}.{first}"))
                    .map(|m| (None, format!("{title}/{m}")))
                    .into_iter()
                    .collect()
            });
        }
    }
    if let (true, Some((version, file))) = (tools.link_latest, versions.iter().next_back()) {
        ctx.check(title, Some(*version), Rule::Symlinks, file, || {
            let mut links = vec![(format!("latest.{first}"), format!("{version}.{first}"))];
            if tools.link_extensionless {
                links.push(("latest".to_owned(), format!("{version}.{first}")));
            }
            links
                .iter()
                .filter_map(|(name, target)| link_problem(files, name, target))
                .map(|m| (None, format!("{title}/{m}")))
                .collect()
        });
    }
}

fn link_problem(
    files: &BTreeMap<String, Option<String>>,
    name: &str,
    target: &str,
) -> Option<String> {
    match files.get(name) {
        None => Some(format!("{name} is missing; it should link to {target}")),
        Some(Some(t)) if t == target => None,
        Some(Some(t)) => Some(format!("{name} links to {t}, not {target}")),
        Some(None) => Some(format!("{name} is a file, not a link to {target}")),
    }
}

fn snake_case(node: &Value, path: &mut String, out: &mut Vec<(Option<String>, String)>) {
    if let Some(Value::Array(parts)) = node.get("allOf") {
        for p in parts {
            snake_case(p, path, out);
        }
    }
    let Some(Value::Object(props)) = node.get("properties") else {
        return;
    };
    for (name, prop) in props {
        let len = path.len();
        path.push_str("/properties/");
        path.push_str(name);
        if !is_snake_case(name) {
            out.push((
                Some(format!("#{path}")),
                format!("property `{name}` is not snake_case"),
            ));
        }
        snake_case(prop, path, out);
        path.truncate(len);
    }
}

/// `^[$a-z]+[a-z0-9_]*$`
fn is_snake_case(name: &str) -> bool {
    let lead = name
        .bytes()
        .take_while(|b| *b == b'$' || b.is_ascii_lowercase())
        .count();
    lead > 0
        && name
            .bytes()
            .skip(lead)
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn deterministic(node: &Value, path: &str, out: &mut Vec<(Option<String>, String)>) {
    let ty = node.get("type");
    if let Some(Value::Array(_)) = ty {
        out.push((
            Some(format!("{path}/type")),
            "the type is a union of types".to_owned(),
        ));
    }
    let ty = ty.and_then(Value::as_str);
    if ty == Some("array") {
        match node.get("items") {
            Some(items) if items.get("type").is_some() => {
                deterministic(items, &format!("{path}/items"), out)
            }
            _ => out.push((
                Some(format!("{path}/items")),
                "an array must give items.type".to_owned(),
            )),
        }
    }
    if ty == Some("object") {
        let has_schema = ["properties", "oneOf", "allOf"]
            .iter()
            .any(|k| node.get(k).is_some());
        let map = node.get("additionalProperties");
        let is_map = map.is_some_and(|m| m.is_object() || *m == Value::Bool(true));
        if !has_schema && !is_map {
            out.push((
                Some(path.to_owned()),
                "an object must give properties or additionalProperties".to_owned(),
            ));
        }
        if let Some(m) = map.filter(|m| m.is_object()) {
            deterministic(m, &format!("{path}/additionalProperties"), out);
        }
    }
    if let Some(Value::Object(props)) = node.get("properties") {
        for (name, prop) in props {
            let p = format!("{path}/properties/{name}");
            if prop.get("type").is_none() {
                out.push((Some(p.clone()), format!("property `{name}` has no type")));
            }
            deterministic(prop, &p, out);
        }
    }
    if let Some(Value::Array(parts)) = node.get("allOf") {
        for p in parts {
            deterministic(p, path, out);
        }
    }
    if let Some(Value::Array(one_of)) = node.get("oneOf")
        && let Some(first) = one_of.first()
    {
        let t = first.get("type");
        if one_of.iter().any(|s| s.get("type") != t) {
            out.push((
                Some(format!("{path}/oneOf")),
                "oneOf mixes schemas of different types".to_owned(),
            ));
        } else if t.and_then(Value::as_str) == Some("object") {
            let shape = |s: &Value| {
                let mut r: Vec<String> = s
                    .get("required")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect();
                r.sort();
                r
            };
            if one_of.iter().any(|s| shape(s) != shape(first)) {
                out.push((
                    Some(format!("{path}/oneOf")),
                    "oneOf object schemas require different properties".to_owned(),
                ));
            }
        }
        for s in one_of {
            deterministic(s, path, out);
        }
    }
}

fn required_exist(node: &Value, path: &str, out: &mut Vec<(Option<String>, String)>) {
    let props = node.get("properties").and_then(Value::as_object);
    if let Some(required) = node.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if !props.is_some_and(|p| p.contains_key(name)) {
                out.push((
                    Some(format!("{path}/required")),
                    format!("`{name}` is required but not declared under properties"),
                ));
            }
        }
    }
    for (name, prop) in props.into_iter().flatten() {
        required_exist(prop, &format!("{path}/properties/{name}"), out);
    }
}

fn numeric_bounds(doc: &Value, lo: f64, hi: f64) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    schema_paths(doc, "#", &mut |node, path| {
        if !matches!(
            node.get("type").and_then(Value::as_str),
            Some("number" | "integer")
        ) {
            return;
        }
        let at = Some(path.to_owned());
        match node.get("minimum").and_then(Value::as_f64) {
            None => out.push((at.clone(), "the number has no minimum".to_owned())),
            Some(m) if m < lo => out.push((
                at.clone(),
                format!("minimum {} is below the enforced {}", num(m), num(lo)),
            )),
            _ => {}
        }
        match node.get("maximum").and_then(Value::as_f64) {
            None => out.push((at, "the number has no maximum".to_owned())),
            Some(m) if m > hi => out.push((
                at,
                format!("maximum {} is above the enforced {}", num(m), num(hi)),
            )),
            _ => {}
        }
    });
    out
}

/// A number as people write it: `9007199254740991`, `1e300`.
fn num(x: f64) -> String {
    if x.abs() < 1e16 {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}
