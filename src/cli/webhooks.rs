//! `presence webhooks test NAME`: sends the endpoint NAME of the configuration a signed test
//! event (`webhook.test`), through the same checks as every delivery, and says what it answered.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use crate::{
    config::{self, Overrides},
    webhooks::Endpoint,
};

#[derive(Debug, Args)]
pub(super) struct WebhooksArgs {
    #[command(subcommand)]
    command: WebhooksCommand,
}

#[derive(Debug, Subcommand)]
enum WebhooksCommand {
    /// Send the endpoint a signed test event and print its answer.
    Test {
        /// The endpoint's `name` in `webhooks:`.
        name: String,
    },
}

pub(super) fn run(file: Option<PathBuf>, args: WebhooksArgs) -> anyhow::Result<()> {
    let WebhooksCommand::Test { name } = args.command;
    let config = config::load(file.as_deref(), &Overrides::default())?;
    let Some(hook) = config.webhooks.iter().find(|w| w.name == name) else {
        let known: Vec<&str> = config.webhooks.iter().map(|w| w.name.as_str()).collect();
        bail!("no endpoint named {name:?} in webhooks: (there are: {})", known.join(", "));
    };
    let endpoint = Endpoint::new(hook)?;
    let id = format!("msg_test_{:016x}", rand::random::<u64>());
    let event = serde_json::json!({
        "type": "webhook.test",
        "timestamp": crate::model::millis(&chrono::Utc::now()),
        "data": {"endpoint": name, "node_id": config.node_id()},
    });
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let answer = runtime
        .block_on(endpoint.post(&id, event.to_string().into()))
        .with_context(|| format!("webhook {name}: not delivered"))?;
    println!("webhook {name}: {} for {id}", answer.status);
    if !(200..300).contains(&answer.status) {
        bail!("webhook {name} answered {}: a delivery counts only with a 2xx", answer.status);
    }
    Ok(())
}
