//! `keel migrate`: apply pending schema migrations and exit.

use keel_actors::resource::pg::migrate;

use crate::config::Config;
use crate::exit_code;

pub(super) async fn run(config: &Config) -> u8 {
    let driver = match config.postgres.driver_config() {
        Ok(driver) => driver,
        Err(expected) => {
            tracing::error!(%expected, "postgres.url is invalid.");
            return exit_code::BAD_CONFIG;
        }
    };
    let tls = match keel_actors::resource::pg::tls_connector(&config.postgres) {
        Ok(tls) => tls,
        Err(error) => {
            tracing::error!(%error, "postgres TLS settings are unusable.");
            return exit_code::BAD_CONFIG;
        }
    };
    let (mut client, connection) = match driver.connect(tls).await {
        Ok(pair) => pair,
        Err(error) => {
            tracing::error!(%error, "Cannot connect to PostgreSQL.");
            return exit_code::TASK_FAILED;
        }
    };
    let driver_task = tokio::spawn(connection);
    let result = migrate(&mut client).await;
    drop(client);
    let _ = driver_task.await;
    match result {
        Ok(applied) if applied.is_empty() => {
            println!("schema is up to date");
            exit_code::OK
        }
        Ok(applied) => {
            println!("applied migrations {applied:?}");
            exit_code::OK
        }
        Err(error) => {
            tracing::error!(%error, "Migration failed.");
            exit_code::TASK_FAILED
        }
    }
}
