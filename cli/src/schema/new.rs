//! `sluice schema new`: a new schema, `current.yaml` and 1.0.0 with its links.

use super::*;

/// `sluice schema new`.
#[derive(Args, Debug)]
pub struct NewArgs {
    /// The new schema's directory, e.g. `schemas/jsonschema/shop/checkout/step`.
    path: PathBuf,
    /// What one event of this schema records.
    #[arg(long, default_value = "TODO: what one event of this schema records.")]
    description: String,
    /// The fragment the schema builds on (default: the latest
    /// `/fragment/common` in the repositories, if any).
    #[arg(long)]
    fragment: Option<String>,
    /// Further repositories for `$ref`s (a primary, for a secondary's schema).
    #[arg(long = "repo")]
    repos: Vec<PathBuf>,
}

pub(super) fn run(args: NewArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.path)
        .with_context(|| format!("cannot create {}", args.path.display()))?;
    let (loaded, title) = load_for(&args.path, &args.repos)?;
    let dir = loaded.schema_dir(0, &title);
    let current_path = dir.join("current.yaml");
    if current_path.exists() || loaded.repos[0].versions.contains_key(&title) {
        bail!("{title} already exists; edit its current.yaml and run `sluice schema bump`");
    }
    let fragment = args.fragment.clone().or_else(|| {
        loaded
            .repos
            .iter()
            .filter_map(|r| r.versions.get("fragment/common"))
            .filter_map(|v| v.keys().next_back().copied())
            .max()
            .map(|v| format!("/fragment/common/{v}#"))
    });
    let stream = title.replace('/', ".");
    let mut text = format!(
        "title: {title}\ndescription: {}\n$id: /{title}/1.0.0\n$schema: https://json-schema.org/draft-07/schema#\ntype: object\n",
        serde_json::to_string(&args.description)?
    );
    match &fragment {
        Some(f) => text.push_str(&format!(
            "allOf:\n  - $ref: {f}\n  - properties:\n      # Add this schema's own fields here, snake_case, each with a type and a description.\n      action:\n        description: What the user did.\n        type: string\n        maxLength: 128\n"
        )),
        None => text.push_str(
            "required:\n  - $schema\n  - meta\nproperties:\n  $schema:\n    description: The URI of this event's schema.\n    type: string\n  meta:\n    type: object\n    required: [dt, stream]\n    properties:\n      dt:\n        type: string\n        format: date-time\n        maxLength: 128\n      stream:\n        type: string\n        minLength: 1\n  action:\n    description: What the user did.\n    type: string\n    maxLength: 128\n",
        ),
    }
    // The example: one instance of the materialized schema, with this stream's name.
    let repos = loaded.order(0);
    let materializer = Materializer::new(repos.iter());
    let parse = |text: &str| {
        sluice_shared::parse_document(text.as_bytes(), "yaml")
            .map_err(|e| anyhow::anyhow!("the new current.yaml does not parse: {e}"))
    };
    let draft = materializer
        .materialize(&parse(&text)?, &repos[0].tools)
        .map_err(|e| anyhow::anyhow!("{title}: {e}"))?;
    let mut sample = tooling::example(&draft.schema).unwrap_or_else(|| json!({}));
    if let Some(obj) = sample.as_object_mut() {
        obj.insert("$schema".into(), json!({"$ref": "#/$id"}));
        if let Some(meta) = obj.get_mut("meta").and_then(Value::as_object_mut) {
            meta.insert("stream".into(), json!(stream));
        }
    }
    text.push_str("examples:\n");
    for line in tooling::to_yaml(&json!([sample])).lines() {
        text.push_str(&format!("  {line}\n"));
    }
    let document = parse(&text)?;
    let m = materializer
        .materialize(&document, &repos[0].tools)
        .map_err(|e| anyhow::anyhow!("{title}: {e}"))?;
    write_file(&current_path, &text)?;
    let files = write_version(&dir, &repos[0], m.version, &m.schema)?;
    println!(
        "created {} and /{title}/1.0.0 ({} files)",
        current_path.display(),
        files.len()
    );
    println!(
        "edit current.yaml, then run `sluice schema bump {}`",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
