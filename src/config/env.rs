//! `KEEL__SECTION__KEY=value` environment overrides, applied to the parsed file.

use std::collections::BTreeMap;

use toml::{Table, Value};

/// The prefix every override starts with.
const PREFIX: &str = "KEEL__";

/// Applies every `KEEL__A__B=v` in `vars` as `a.b = v` and returns the dotted keys
/// set, mapped to the variable that set them (for error messages).
///
/// A value is read as a TOML value when it parses as one (`5`, `true`, `"x"`,
/// `[1, 2]`), otherwise as a plain string, so `KEEL__SUPERVISOR__PERIOD=30s` works
/// without quotes.
pub(super) fn apply(
    table: &mut Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<BTreeMap<String, String>, (String, String)> {
    let mut origins = BTreeMap::new();
    for (var, raw) in vars {
        let Some(path) = var.strip_prefix(PREFIX) else {
            continue;
        };
        let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
        if keys.iter().any(String::is_empty) {
            return Err((var, "an empty key segment (`__` twice in a row?)".into()));
        }
        let dotted = keys.join(".");
        set(table, &keys, parse_value(&raw)).map_err(|expected| (var.clone(), expected))?;
        origins.insert(dotted, var);
    }
    Ok(origins)
}

fn parse_value(raw: &str) -> Value {
    toml::from_str::<Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_owned()))
}

fn set(table: &mut Table, keys: &[String], value: Value) -> Result<(), String> {
    let (last, parents) = keys.split_last().ok_or("a key")?;
    let mut current = table;
    for key in parents {
        let next = current
            .entry(key.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        current = next
            .as_table_mut()
            .ok_or_else(|| format!("`{key}` to be a section, but the file sets it to a value"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn overrides_nest_and_keep_their_types() {
        let mut t: Table = toml::from_str("[supervisor]\nmax_restarts = 3").unwrap();
        let origins = apply(
            &mut t,
            vars(&[
                ("KEEL__SUPERVISOR__MAX_RESTARTS", "7"),
                ("KEEL__SUPERVISOR__BACKOFF__MAX", "5s"),
                ("PATH", "/usr/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(t["supervisor"]["max_restarts"].as_integer(), Some(7));
        assert_eq!(t["supervisor"]["backoff"]["max"].as_str(), Some("5s"));
        assert_eq!(
            origins.get("supervisor.backoff.max").map(String::as_str),
            Some("KEEL__SUPERVISOR__BACKOFF__MAX")
        );
        assert_eq!(origins.len(), 2);
    }

    #[test]
    fn a_value_cannot_become_a_section() {
        let mut t: Table = toml::from_str("supervisor = 1").unwrap();
        let err = apply(&mut t, vars(&[("KEEL__SUPERVISOR__PERIOD", "1s")])).unwrap_err();
        assert_eq!(err.0, "KEEL__SUPERVISOR__PERIOD");
        assert!(err.1.contains("section"), "{}", err.1);
    }

    #[test]
    fn empty_segments_are_rejected() {
        let mut t = Table::new();
        assert!(apply(&mut t, vars(&[("KEEL__A____B", "1")])).is_err());
    }
}
