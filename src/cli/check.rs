//! `keel check`: validate and print the effective configuration.

use crate::config::Config;
use crate::exit_code;

pub(super) fn run(config: &Config) -> u8 {
    match config.to_redacted_toml() {
        Ok(text) => {
            print!("{text}");
            exit_code::OK
        }
        Err(error) => {
            tracing::error!(%error, "Cannot render the configuration.");
            exit_code::BAD_CONFIG
        }
    }
}
