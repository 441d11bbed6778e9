//! `config/schema.json` is generated from the spec types; this test fails when it is stale.
//! Regenerate with `UPDATE_SCHEMA=1 cargo test -p attache-config --test schema`.

use std::path::Path;

#[test]
fn schema_json_is_up_to_date() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema.json");
    let schema = attache_config::json_schema();
    if std::env::var_os("UPDATE_SCHEMA").is_some_and(|v| v == "1") {
        let generated =
            serde_json::to_string_pretty(&schema).unwrap_or_else(|e| panic!("serializing the schema: {e}")) + "\n";
        std::fs::write(&path, &generated).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        return;
    }
    // Compared as JSON values, so key order (serde_json's `preserve_order` may be on in a workspace build) is moot.
    let current =
        std::fs::read_to_string(&path).ok().and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
    assert!(
        current.as_ref() == Some(&schema),
        "{} is stale or missing; regenerate it with:\n\n    UPDATE_SCHEMA=1 cargo test -p attache-config --test schema\n",
        path.display()
    );
}
