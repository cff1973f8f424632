//! The command line: `presence [serve]` runs a node, `presence token` mints a JWT, `presence
//! certs` writes development certificates, `presence watch` follows users live (`tail`),
//! `presence webhooks test NAME` sends an endpoint a signed test event (`webhooks`).

mod tail;
mod webhooks;

pub use tail::{Follow, Tail};

use std::{net::IpAddr, path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};

use crate::{
    app::{self, Application},
    auth::{Authenticator, secret},
    config::{self, LogFormat, Overrides, units},
    model::UserId,
    telemetry,
};

#[derive(Debug, Parser)]
#[command(
    name = "presence",
    version,
    about = "Who is online, away, busy or offline: a presence service on NATS JetStream."
)]
pub struct Cli {
    /// The YAML configuration file (docs/configuration.md, "Configuration"); built-in defaults without one.
    #[arg(long, short, global = true, env = "PRESENCE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node (the default).
    Serve(ServeArgs),
    /// Print a JWT for a user, signed with the secret the node uses (never a new one).
    Token(TokenArgs),
    /// Write a development CA and a certificate per host, to try TLS links on one machine.
    Certs(CertsArgs),
    /// Follow users' presence live from a terminal: one line per change.
    Watch(WatchArgs),
    /// The webhook endpoints of the configuration: `presence webhooks test NAME`.
    Webhooks(webhooks::WebhooksArgs),
}

#[derive(Debug, Args)]
struct WatchArgs {
    /// The node: http://host:port or https://host:port.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// For an https:// node: the CA bundle that signed its certificate.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The users to follow (at most 1000).
    #[arg(required_unless_present = "room", conflicts_with = "room")]
    users: Vec<String>,
    /// Follow this room instead: its members, then who joins, updates and leaves.
    #[arg(long)]
    room: Option<String>,
    /// The token a room that is not public is read with (its `rooms` claim must match it).
    #[arg(long, env = "PRESENCE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// Flags for the most used keys; they override the file and the environment.
#[derive(Debug, Clone, Default, Args)]
struct ServeArgs {
    /// service.host: the HTTP bind address.
    #[arg(long)]
    host: Option<IpAddr>,
    /// service.port: the HTTP port.
    #[arg(long)]
    port: Option<u16>,
    /// service.node_id.
    #[arg(long)]
    node_id: Option<String>,
    /// nats.data_dir: JetStream store, generated secret, embedded server's config.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// nats.port: client port of the embedded nats-server.
    #[arg(long)]
    nats_port: Option<u16>,
    /// nats.leaf_port: leafnode port of the embedded nats-server.
    #[arg(long)]
    leaf_port: Option<u16>,
    /// nats.url: use this external NATS instead of the embedded one.
    #[arg(long)]
    nats_url: Option<String>,
    /// logging.level.
    #[arg(long)]
    log_level: Option<String>,
    /// logging.format: json or text.
    #[arg(long, value_parser = parse_format)]
    log_format: Option<LogFormat>,
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// The user the token is for (its `sub`).
    #[arg(long)]
    user: String,
    /// Lifetime, e.g. 1h or 24h; default auth.jwt_ttl.
    #[arg(long, value_parser = units::parse_duration)]
    ttl: Option<std::time::Duration>,
    /// Rooms the user may join and read: patterns where `*` matches any run of characters,
    /// comma-separated or repeated (`--rooms 'doc-*' --rooms team-42`).
    #[arg(long, value_delimiter = ',')]
    rooms: Vec<String>,
    /// nats.data_dir, where a generated secret is kept.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct CertsArgs {
    /// Where to write ca.pem, ca-key.pem, {host}.pem and {host}-key.pem.
    #[arg(long)]
    dir: PathBuf,
    /// The hosts (names or IP addresses), comma-separated: one certificate each.
    #[arg(long, value_delimiter = ',', required = true)]
    hosts: Vec<String>,
}

fn parse_format(text: &str) -> Result<LogFormat, String> {
    match text {
        "json" => Ok(LogFormat::Json),
        "text" => Ok(LogFormat::Text),
        _ => Err("must be json or text".into()),
    }
}

impl From<ServeArgs> for Overrides {
    fn from(a: ServeArgs) -> Self {
        Overrides {
            host: a.host,
            port: a.port,
            node_id: a.node_id,
            data_dir: a.data_dir,
            nats_port: a.nats_port,
            leaf_port: a.leaf_port,
            nats_url: a.nats_url,
            log_level: a.log_level,
            log_format: a.log_format,
        }
    }
}

/// Parses the command line and runs what it asks for.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::tls::install_provider();
    let result = match cli.command {
        Some(Command::Certs(args)) => certs(args),
        Some(Command::Watch(args)) => watch(args),
        Some(Command::Token(args)) => token(cli.config, args),
        Some(Command::Webhooks(args)) => webhooks::run(cli.config, args),
        Some(Command::Serve(args)) => serve(cli.config, args),
        None => serve(cli.config, cli.serve),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("presence: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(file: Option<PathBuf>, args: ServeArgs) -> anyhow::Result<()> {
    let config = config::load(file.as_deref(), &args.into())?;
    // Held until the process ends, so that the last log lines are written out.
    let _logs = telemetry::init(&config.logging);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let app = Application::build(config).await?;
        app.run_until(app::shutdown_signal()).await
    })
}

fn watch(args: WatchArgs) -> anyhow::Result<()> {
    let follow = match args.room {
        Some(room) => {
            anyhow::ensure!(crate::model::is_valid_room(&room), "--room: {}", crate::model::RoomError::Room);
            Follow::Room { room, token: args.token }
        }
        None => Follow::Users(
            args.users
                .iter()
                .flat_map(|u| u.split(','))
                .map(|u| UserId::parse(u.trim()).map(|u| u.to_string()))
                .collect::<Result<_, _>>()?,
        ),
    };
    let tail = Tail { url: args.url, follow, ca: args.ca };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut stdout = tokio::io::stdout();
        tokio::select! {
            result = tail.run(&mut stdout) => result,
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}

fn certs(args: CertsArgs) -> anyhow::Result<()> {
    let hosts: Vec<String> =
        args.hosts.iter().map(|h| h.trim().to_string()).filter(|h| !h.is_empty()).collect();
    let written = crate::tls::certs::generate(&args.dir, &hosts)?;
    println!("CA certificate: {}  (key: {})", written.ca_cert.display(), written.ca_key.display());
    for host in &written.hosts {
        println!("{}: {}  (key: {})", host.host, host.cert.display(), host.key.display());
    }
    println!("Development certificates, valid for a year; not for production.");
    Ok(())
}

fn token(file: Option<PathBuf>, args: TokenArgs) -> anyhow::Result<()> {
    let overrides = Overrides { data_dir: args.data_dir, ..Default::default() };
    let config = config::load(file.as_deref(), &overrides)?;
    let user = UserId::parse(&args.user)?;
    let (secret, source) = secret::find(&config)?;
    match (source, file.as_deref()) {
        (secret::SecretSource::Configured, Some(file)) => {
            eprintln!("presence: signed with auth.jwt_secret of {}", file.display())
        }
        (secret::SecretSource::Configured, None) => eprintln!("presence: signed with auth.jwt_secret"),
        (secret::SecretSource::Existing(path) | secret::SecretSource::Generated(path), _) => {
            let path = std::path::absolute(&path).unwrap_or(path);
            eprintln!("presence: signed with the node's generated secret in {}", path.display())
        }
    }
    let ttl = args.ttl.unwrap_or(config.auth.jwt_ttl);
    anyhow::ensure!(
        ttl <= config.auth.max_token_ttl,
        "--ttl {} is over auth.max_token_ttl ({}): the service would refuse the token",
        humantime::format_duration(ttl),
        humantime::format_duration(config.auth.max_token_ttl)
    );
    anyhow::ensure!(
        args.rooms.iter().all(|p| crate::model::is_valid_room_pattern(p)),
        "--rooms: each pattern is 1 to 128 characters of A-Z a-z 0-9 _ - and `*`"
    );
    println!("{}", Authenticator::new(&secret, &config.auth).mint_with_rooms(&user, ttl, &args.rooms));
    Ok(())
}
