//! `basketflow privacy`: the shopper's rights, from the command line.
//!
//! - `privacy erase`: the right to be forgotten. Produces an [`ErasureRequest`] to
//!   `[kafka] privacy_topic` (key = `shopper_id`); the graph applies it to every derived state
//!   and table and then writes a row to `<database>.privacy_audit`. With `--wait`, the command
//!   waits for that row and prints it.
//! - `privacy export`: the right of access. Prints, as one JSON document, every row the analyst
//!   views hold about one shopper, and where else (Kafka) their data lives.
//!
//! Both read the same configuration as `run` (`--config`, else `./basketflow.toml` if present,
//! else the defaults; `BASKETFLOW_*` overrides).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use basketflow_kafka::{client_config, keyed_producer};
use basketflow_sinks::clickhouse::ClickHouseReader;
use basketflow_vocab::{ErasureRequest, Timestamp};
use clap::{Args, Subcommand};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use serde_json::{json, Map, Value};

use crate::config::{Config, DEFAULT_PATH};

/// The table the graph records every applied erasure in (fixed name, in `[clickhouse]
/// database`).
pub const AUDIT_TABLE: &str = "privacy_audit";

/// The analyst views `privacy export` reads, each with the order its rows are listed in. Each
/// has `retailer_id` and `shopper_id` columns.
pub const EXPORT_VIEWS: [(&str, &str); 4] = [
    ("shopper_purchases", "product_id"),
    ("baskets", "product_id"),
    ("order_lines", "order_id, product_id, category"),
    ("experience_decisions", "decided_at, decision_id"),
];

/// How long the broker may take to acknowledge the request before `erase` fails.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// How often `erase --wait` looks for the audit row.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// `basketflow privacy <command>`.
#[derive(Subcommand, Debug)]
pub(crate) enum PrivacyCommand {
    /// Ask the graph to forget a shopper (right to erasure): produce an erasure request to
    /// `[kafka] privacy_topic` and print it as one JSON line. With --wait, also wait until the
    /// graph has applied it everywhere and print its privacy_audit row as a second line.
    Erase(EraseArgs),
    /// Print everything the analyst views hold about a shopper (right of access), as one JSON
    /// document, with a note on what Kafka still keeps.
    Export(ExportArgs),
}

/// Options of `basketflow privacy erase`.
#[derive(Args, Debug, Clone)]
pub(crate) struct EraseArgs {
    /// The retailer the shopper belongs to.
    #[arg(long)]
    pub retailer: String,
    /// The shopper to forget (the retailer's pseudonymous id).
    #[arg(long)]
    pub shopper: String,
    /// The request's id, the key of its audit row. Default: "erase-" and 32 random hex digits.
    #[arg(long)]
    pub request_id: Option<String>,
    /// The configuration file ([kafka] brokers and privacy_topic, [clickhouse]). Default:
    /// ./basketflow.toml if it exists, else the built-in defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Wait until the graph has applied the request (its row in privacy_audit); exit 1 if it
    /// has not within --timeout-s.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(long, default_value_t = 60, requires = "wait")]
    pub timeout_s: u64,
}

/// Options of `basketflow privacy export`.
#[derive(Args, Debug, Clone)]
pub(crate) struct ExportArgs {
    /// The retailer the shopper belongs to.
    #[arg(long)]
    pub retailer: String,
    /// The shopper (the retailer's pseudonymous id).
    #[arg(long)]
    pub shopper: String,
    /// The configuration file ([clickhouse], [kafka] topic names). Default: ./basketflow.toml
    /// if it exists, else the built-in defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Runs a `privacy` command. Any failure (and `erase --wait` when the request is not applied in
/// time) is reported on stderr, without a backtrace, and exits with status 1.
pub(crate) fn run(command: PrivacyCommand) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building a tokio runtime")?;
    let (name, outcome) = match command {
        PrivacyCommand::Erase(args) => ("erase", runtime.block_on(erase(args))),
        PrivacyCommand::Export(args) => ("export", runtime.block_on(export(args))),
    };
    if let Err(e) = outcome {
        // The command's answer, not a crash: the causes in one line.
        eprintln!("privacy {name}: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

fn load_config(path: Option<&Path>) -> Result<Config> {
    let default = Path::new(DEFAULT_PATH);
    let path = path.or_else(|| default.exists().then_some(default));
    Ok(Config::resolve_file(path)?.config)
}

/// A request id nobody else has: `erase-` and 128 random bits in hex.
pub fn new_request_id() -> String {
    format!("erase-{:032x}", rand::random::<u128>())
}

/// The erasure request for `retailer_id` and `shopper_id`, requested now, checked as the graph
/// checks it; with `request_id`, or a new one.
pub fn erasure_request(
    retailer_id: &str,
    shopper_id: &str,
    request_id: Option<&str>,
) -> Result<ErasureRequest> {
    let request = ErasureRequest {
        request_id: request_id.map_or_else(new_request_id, str::to_owned),
        retailer_id: retailer_id.to_owned(),
        shopper_id: shopper_id.to_owned(),
        requested_at: Timestamp::now(),
    };
    // What the graph will read: a request it would refuse is not sent.
    let json = serde_json::to_vec(&request).context("writing the request as JSON")?;
    ErasureRequest::parse(&json).map_err(|why| anyhow!("invalid erasure request: {why}"))
}

async fn connect(config: &Config) -> Result<ClickHouseReader> {
    let ch = &config.clickhouse;
    ClickHouseReader::connect(&ch.url, &ch.database, &ch.user, &ch.password)
        .await
        .with_context(|| format!("connecting to ClickHouse at {}", ch.url))
}

async fn erase(args: EraseArgs) -> Result<()> {
    let config = load_config(args.config.as_deref())?;
    let request = erasure_request(&args.retailer, &args.shopper, args.request_id.as_deref())?;
    let json = serde_json::to_string(&request).context("writing the request as JSON")?;
    // Before anything is sent: --wait against a ClickHouse it cannot reach would only time out.
    let reader = if args.wait {
        Some(connect(&config).await?)
    } else {
        None
    };

    let topic = &config.kafka.privacy_topic;
    // Idempotent (retries never duplicate the request), and partitioned by key as Java
    // clients, the collector and the trees builder do.
    let producer: FutureProducer = keyed_producer(client_config(&config.kafka.brokers))
        // Acknowledged = on every in-sync replica.
        .set("acks", "all")
        .set(
            "message.timeout.ms",
            DELIVERY_TIMEOUT.as_millis().to_string(),
        )
        // A missing topic is an error, not a topic created on the fly with broker defaults.
        .set("allow.auto.create.topics", "false")
        .create()
        .context("creating the Kafka producer")?;
    check_topic(&producer, topic, &config.kafka.brokers)?;
    let record = FutureRecord::to(topic)
        .key(request.shopper_id.as_str())
        .payload(json.as_str());
    let delivery = producer
        .send(record, DELIVERY_TIMEOUT)
        .await
        .map_err(|(e, _)| {
            anyhow!(
                "producing the erasure request to {topic} on {}: {e}",
                config.kafka.brokers
            )
        })?;
    eprintln!(
        "privacy: request {} sent to {topic} (partition {}, offset {})",
        request.request_id, delivery.partition, delivery.offset
    );
    let mut out = std::io::stdout().lock();
    writeln!(out, "{json}")?;
    out.flush()?;
    drop(out);

    let Some(reader) = reader else {
        return Ok(());
    };
    let timeout = Duration::from_secs(args.timeout_s);
    match wait_for_audit(&reader, &request.retailer_id, &request.request_id, timeout).await? {
        Some(row) => {
            println!("{row}");
            Ok(())
        }
        None => {
            eprintln!(
                "privacy erase: request {} not applied within {} s: no row in {}.{AUDIT_TABLE} \
                 yet (is `basketflow run` running and reading {topic}?). The request is sent; \
                 the graph applies it when it reads it.",
                request.request_id,
                args.timeout_s,
                reader.database()
            );
            std::process::exit(1);
        }
    }
}

/// Fails unless `topic` exists: a missing topic would otherwise only show as a delivery
/// timeout.
fn check_topic(producer: &FutureProducer, topic: &str, brokers: &str) -> Result<()> {
    let metadata = producer
        .client()
        .fetch_metadata(Some(topic), DELIVERY_TIMEOUT)
        .with_context(|| format!("reading the metadata of {topic} from {brokers}"))?;
    let found = metadata.topics().iter().find(|t| t.name() == topic);
    match found.map(|t| (t.error(), t.partitions().len())) {
        Some((None, partitions)) if partitions > 0 => Ok(()),
        Some((Some(code), _)) if !missing(RDKafkaErrorCode::from(code)) => bail!(
            "topic {topic} is not available on {brokers}: {}",
            RDKafkaErrorCode::from(code)
        ),
        _ => bail!(
            "topic {topic} does not exist on {brokers}; create it, or set kafka.privacy_topic"
        ),
    }
}

/// The broker's and librdkafka's answers for a topic that does not exist.
fn missing(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic
    )
}

/// Polls `<database>.privacy_audit` for the row of `retailer_id`'s `request_id` (request ids
/// are unique per retailer) until it exists (`Some`) or
/// `timeout` has passed (`None`). A missing table means the graph has not applied any request
/// yet; ClickHouse errors are retried until the timeout, and the last one is then returned.
pub(crate) async fn wait_for_audit(
    reader: &ClickHouseReader,
    retailer_id: &str,
    request_id: &str,
    timeout: Duration,
) -> Result<Option<Value>> {
    let deadline = Instant::now() + timeout;
    loop {
        let last_error = match audit_row(reader, retailer_id, request_id).await {
            Ok(Some(row)) => return Ok(Some(row)),
            Ok(None) => None,
            Err(e) => Some(e),
        };
        let now = Instant::now();
        if now >= deadline {
            return match last_error {
                Some(e) => Err(e.context(format!(
                    "waiting for request {request_id} in {}.{AUDIT_TABLE}",
                    reader.database()
                ))),
                None => Ok(None),
            };
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
    }
}

/// The audit row of `retailer_id`'s `request_id`, if the table and the row exist.
async fn audit_row(
    reader: &ClickHouseReader,
    retailer_id: &str,
    request_id: &str,
) -> Result<Option<Value>> {
    let db = reader.database();
    let tables: u64 = reader
        .client()
        .query("SELECT count() FROM system.tables WHERE database = ? AND name = ?")
        .bind(db)
        .bind(AUDIT_TABLE)
        .fetch_one()
        .await
        .context("looking for the audit table")?;
    if tables == 0 {
        return Ok(None);
    }
    let query = reader
        .client()
        .query(&format!(
            "SELECT * FROM {db}.{AUDIT_TABLE} WHERE retailer_id = ? AND request_id = ? \
             ORDER BY applied_at LIMIT 1"
        ))
        .bind(retailer_id)
        .bind(request_id);
    Ok(json_rows(query)
        .await
        .with_context(|| format!("reading {db}.{AUDIT_TABLE}"))?
        .into_iter()
        .next())
}

/// The rows of `query` as JSON objects, every column in the query's order, 64-bit integers as
/// numbers.
async fn json_rows(query: clickhouse::query::Query) -> Result<Vec<Value>> {
    let bytes = query
        .with_setting("output_format_json_quote_64bit_integers", "0")
        .fetch_bytes("JSONEachRow")?
        .collect()
        .await?;
    let text = std::str::from_utf8(&bytes).context("ClickHouse answered with invalid UTF-8")?;
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line)
                .with_context(|| format!("ClickHouse answered a row that is not JSON: {line}"))
        })
        .collect()
}

async fn export(args: ExportArgs) -> Result<()> {
    let config = load_config(args.config.as_deref())?;
    for (flag, id) in [("--retailer", &args.retailer), ("--shopper", &args.shopper)] {
        if id.is_empty() {
            bail!("{flag} must not be empty");
        }
    }
    let reader = connect(&config).await?;
    let document = export_document(&reader, &config, &args.retailer, &args.shopper).await?;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &document)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// The export of one shopper: every row of each of [`EXPORT_VIEWS`] with their `retailer_id`
/// and `shopper_id`, and a note on the topics that keep their raw data.
pub(crate) async fn export_document(
    reader: &ClickHouseReader,
    config: &Config,
    retailer_id: &str,
    shopper_id: &str,
) -> Result<Value> {
    let db = reader.database();
    let exported_at = Timestamp::now();
    let mut tables = Map::new();
    for (view, order) in EXPORT_VIEWS {
        let query = reader
            .client()
            .query(&format!(
                "SELECT * FROM {db}.{view} WHERE retailer_id = ? AND shopper_id = ? \
                 ORDER BY {order}"
            ))
            .bind(retailer_id)
            .bind(shopper_id);
        let rows = json_rows(query)
            .await
            .with_context(|| format!("reading {db}.{view}"))?;
        tables.insert(view.to_owned(), Value::Array(rows));
    }
    Ok(json!({
        "retailer_id": retailer_id,
        "shopper_id": shopper_id,
        "exported_at": exported_at,
        "tables": tables,
        "kafka": kafka_note(config),
    }))
}

/// Where else the shopper's data lives: the Kafka topics, until their retention.
pub fn kafka_note(config: &Config) -> String {
    let k = &config.kafka;
    format!(
        "Not in this export: the shopper's raw events stay in the Kafka topic {} and the \
         experience decisions about them in {} until each topic's retention period deletes \
         them; refused events in {} likewise, and their experience tree in {} (compacted) \
         until it is replaced.",
        k.events_topic, k.decisions_topic, k.rejected_topic, k.trees_topic
    )
}
