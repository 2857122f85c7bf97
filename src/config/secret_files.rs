//! Secrets from files: `password_file = "/run/secrets/pg"` sets `password` to the
//! file's content, as Docker and Kubernetes mount secrets.

use std::path::Path;

use toml::{Table, Value};

/// Keys whose `<key>_file` variant is read from a file.
pub(super) const SECRET_KEYS: &[&str] = &["password", "token", "client_secret"];

/// Replaces every `<secret>_file` key, at any depth, with `<secret>` holding the
/// file's content (one trailing newline dropped). Errors name the dotted key.
pub(super) fn resolve(table: &mut Table, prefix: &str) -> Result<(), (String, String)> {
    let keys: Vec<String> = table.keys().cloned().collect();
    for key in keys {
        let dotted = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        if let Some(Value::Table(inner)) = table.get_mut(&key) {
            resolve(inner, &dotted)?;
            continue;
        }
        let Some(secret) = key
            .strip_suffix("_file")
            .filter(|s| SECRET_KEYS.contains(s))
        else {
            continue;
        };
        if table.contains_key(secret) {
            return Err((dotted, format!("either `{secret}` or `{key}`, not both")));
        }
        let path = match table.get(&key) {
            Some(Value::String(path)) => path.clone(),
            _ => return Err((dotted, "a file path (string)".into())),
        };
        let content = read_secret(Path::new(&path)).map_err(|e| (dotted, e))?;
        table.remove(&key);
        table.insert(secret.to_owned(), Value::String(content));
    }
    Ok(())
}

/// The largest secret file read (a device or a log named by mistake is not).
const MAX_SECRET: u64 = 64 * 1024;

fn read_secret(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let unreadable =
        |e: std::io::Error| format!("a readable secret file, but {}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_SECRET {
        return Err(format!(
            "a secret file of at most {MAX_SECRET} bytes, but {} is larger",
            path.display()
        ));
    }
    let mut content = String::from_utf8(bytes)
        .map_err(|_| format!("a secret file in UTF-8, but {} is not", path.display()))?;
    if content.ends_with('\n') {
        content.pop();
        if content.ends_with('\r') {
            content.pop();
        }
    }
    if content.is_empty() {
        return Err(format!(
            "a non-empty secret file, but {} is empty",
            path.display()
        ));
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_file_is_refused_not_read() {
        let err = read_secret(Path::new("/dev/zero")).unwrap_err();
        assert!(err.contains("at most"), "{err}");
    }

    #[test]
    fn file_secrets_replace_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pg");
        std::fs::write(&file, "s3cret\n").unwrap();
        let mut t: Table =
            toml::from_str(&format!("[postgres]\npassword_file = {:?}", file)).unwrap();
        resolve(&mut t, "").unwrap();
        assert_eq!(t["postgres"]["password"].as_str(), Some("s3cret"));
        assert!(t["postgres"].get("password_file").is_none());
    }

    #[test]
    fn both_forms_at_once_are_rejected() {
        let mut t: Table = toml::from_str("[admin]\ntoken = \"a\"\ntoken_file = \"/x\"").unwrap();
        let (key, _) = resolve(&mut t, "").unwrap_err();
        assert_eq!(key, "admin.token_file");
    }

    #[test]
    fn a_missing_file_names_the_key_but_not_any_content() {
        let mut t: Table = toml::from_str("[a]\npassword_file = \"/nonexistent/x\"").unwrap();
        let (key, message) = resolve(&mut t, "").unwrap_err();
        assert_eq!(key, "a.password_file");
        assert!(message.contains("/nonexistent/x"), "{message}");
    }

    #[test]
    fn other_file_keys_are_left_alone() {
        let mut t: Table = toml::from_str("log_file = \"/var/log/keel\"").unwrap();
        resolve(&mut t, "").unwrap();
        assert_eq!(t["log_file"].as_str(), Some("/var/log/keel"));
    }
}
