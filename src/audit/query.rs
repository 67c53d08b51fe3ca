//! What auditors ask the log: requests filtered by time, tenant, key, action, route, rule,
//! entity type, status, outcome, request id or value digest; counts by action, route, entity
//! type, tenant and day. The answers hold what the log holds — types, counts, rule ids, digests —
//! never text.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

/// Filters; every one that is set must hold.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// From this time on (RFC 3339, or a date `YYYY-MM-DD`), inclusive.
    pub from: Option<String>,
    /// Before this time (RFC 3339, or a date), exclusive.
    pub to: Option<String>,
    /// Tenant.
    pub tenant: Option<String>,
    /// API key id.
    pub key_id: Option<String>,
    /// `allow | redact | local | block | reject`.
    pub action: Option<String>,
    /// `local` or an upstream name.
    pub route: Option<String>,
    /// A rule id that matched.
    pub rule: Option<String>,
    /// An entity type that was found.
    pub entity: Option<String>,
    /// HTTP status sent.
    pub status: Option<i64>,
    /// Outcome (`completed`, `blocked`, …).
    pub outcome: Option<String>,
    /// One request.
    pub request_id: Option<String>,
    /// A value digest as stored in spans (the first 16 hex digits of the keyed HMAC).
    pub hmac: Option<String>,
    /// Most rows returned (newest first).
    pub limit: Option<usize>,
}

/// One request, as the `audit_requests` view shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RequestRow {
    /// Chain position of the decision.
    pub seq: i64,
    /// When it arrived (UTC).
    pub ts: String,
    /// Request id.
    pub request_id: String,
    /// Tenant.
    pub tenant: Option<String>,
    /// API key id.
    pub key_id: Option<String>,
    /// Requested model (masked if something was found in it).
    pub model: Option<String>,
    /// Action.
    pub action: Option<String>,
    /// Route.
    pub route: Option<String>,
    /// Matched rule ids.
    pub rules: Vec<String>,
    /// Entity types with counts.
    pub entities: BTreeMap<String, u64>,
    /// Policy name.
    pub policy: Option<String>,
    /// Outcome.
    pub outcome: Option<String>,
    /// HTTP status.
    pub status: Option<i64>,
    /// Error code sent, if any.
    pub error_code: Option<String>,
}

impl RequestRow {
    /// Builds a row from the view's JSON columns.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_columns(
        seq: i64,
        ts: String,
        request_id: String,
        tenant: Option<String>,
        key_id: Option<String>,
        model: Option<String>,
        action: Option<String>,
        route: Option<String>,
        rules: Option<String>,
        entities: Option<String>,
        policy: Option<String>,
        outcome: Option<String>,
        status: Option<i64>,
        error_code: Option<String>,
    ) -> Self {
        let parse = |s: Option<String>| -> Vec<Value> {
            s.and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or_default()
        };
        let rules = parse(rules)
            .iter()
            .filter_map(|r| r.get("rule").and_then(Value::as_str).map(str::to_owned))
            .collect();
        let entities = parse(entities)
            .iter()
            .filter_map(|e| {
                Some((
                    e.get("entity")?.as_str()?.to_owned(),
                    e.get("count")?.as_u64()?,
                ))
            })
            .collect();
        Self {
            seq,
            ts,
            request_id,
            tenant,
            key_id,
            model,
            action,
            route,
            rules,
            entities,
            policy,
            outcome,
            status,
            error_code,
        }
    }

    fn cells(&self) -> [String; 10] {
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".to_owned());
        let entities: Vec<String> = self
            .entities
            .iter()
            .map(|(e, n)| format!("{e}x{n}"))
            .collect();
        [
            self.ts.clone(),
            self.request_id.clone(),
            opt(&self.tenant),
            opt(&self.key_id),
            opt(&self.action),
            opt(&self.route),
            if self.rules.is_empty() {
                "-".to_owned()
            } else {
                self.rules.join(" ")
            },
            if entities.is_empty() {
                "-".to_owned()
            } else {
                entities.join(" ")
            },
            opt(&self.outcome),
            self.status
                .map_or_else(|| "-".to_owned(), |s| s.to_string()),
        ]
    }
}

const COLUMNS: [&str; 10] = [
    "ts",
    "request_id",
    "tenant",
    "key_id",
    "action",
    "route",
    "rules",
    "entities",
    "outcome",
    "status",
];

/// The SQL that differs between databases for the JSON inside `audit_requests`; each filter
/// fragment is completed with a bound value and `)`.
pub(crate) struct Dialect {
    /// A rule id matched.
    pub rule: &'static str,
    /// An entity type was found.
    pub entity: &'static str,
    /// A value digest was found.
    pub hmac: &'static str,
    /// The entity types of a request, space-separated.
    pub entity_list: &'static str,
}

impl Dialect {
    /// Groups of `--stats` and the expression each groups by.
    pub fn groups(&self) -> [(Group, &'static str); 5] {
        [
            (Group::Action, "COALESCE(action, '-')"),
            (Group::Route, "COALESCE(route, '-')"),
            (Group::Tenant, "COALESCE(tenant, '-')"),
            (Group::Day, "substr(ts, 1, 10)"),
            (Group::Entity, self.entity_list),
        ]
    }
}

/// What `--stats` counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Group {
    Action,
    Route,
    Tenant,
    Day,
    Entity,
}

/// `FROM audit_requests WHERE …` with every filter of `q` bound.
pub(crate) fn push_filtered<'a, DB: sqlx::Database>(
    qb: &mut sqlx::QueryBuilder<'a, DB>,
    q: &Query,
    dialect: &Dialect,
) where
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    qb.push(" FROM audit_requests WHERE 1 = 1");
    let text = [
        (" AND ts >= ", &q.from),
        (" AND ts < ", &q.to),
        (" AND tenant = ", &q.tenant),
        (" AND key_id = ", &q.key_id),
        (" AND action = ", &q.action),
        (" AND route = ", &q.route),
        (" AND outcome = ", &q.outcome),
        (" AND request_id = ", &q.request_id),
    ];
    for (clause, value) in text {
        if let Some(v) = value {
            qb.push(clause).push_bind(v.clone());
        }
    }
    if let Some(status) = q.status {
        qb.push(" AND status = ").push_bind(status);
    }
    let json = [
        (dialect.rule, &q.rule),
        (dialect.entity, &q.entity),
        (dialect.hmac, &q.hmac),
    ];
    for (fragment, value) in json {
        if let Some(v) = value {
            qb.push(" AND ")
                .push(fragment)
                .push_bind(v.clone())
                .push(")");
        }
    }
}

/// How `veil audit query` prints rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Aligned columns.
    #[default]
    Table,
    /// One JSON object per line, every field.
    Jsonl,
    /// Comma-separated, with a header.
    Csv,
}

/// Rows in a format.
pub fn render(rows: &[RequestRow], format: Format) -> String {
    let mut out = String::new();
    match format {
        Format::Jsonl => {
            for r in rows {
                let _ = writeln!(out, "{}", serde_json::to_string(r).unwrap_or_default());
            }
        }
        Format::Csv => {
            let _ = writeln!(out, "{}", COLUMNS.join(","));
            for r in rows {
                let cells: Vec<String> = r.cells().iter().map(|c| csv_cell(c)).collect();
                let _ = writeln!(out, "{}", cells.join(","));
            }
        }
        Format::Table => {
            let cells: Vec<[String; 10]> = rows.iter().map(RequestRow::cells).collect();
            let mut widths = COLUMNS.map(str::len);
            for row in &cells {
                for (w, c) in widths.iter_mut().zip(row) {
                    *w = (*w).max(c.chars().count());
                }
            }
            let line = |cols: &[String]| {
                let padded: Vec<String> = cols
                    .iter()
                    .zip(widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                padded.join("  ").trim_end().to_owned()
            };
            let header: Vec<String> = COLUMNS.iter().map(|c| (*c).to_owned()).collect();
            let _ = writeln!(out, "{}", line(&header));
            for row in &cells {
                let _ = writeln!(out, "{}", line(row));
            }
            let _ = writeln!(out, "{} request(s)", rows.len());
        }
    }
    out
}

fn csv_cell(c: &str) -> String {
    if c.contains([',', '"', '\n']) {
        format!("\"{}\"", c.replace('"', "\"\""))
    } else {
        c.to_owned()
    }
}

/// Counts of the requests a query selects.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Stats {
    /// Requests selected.
    pub requests: u64,
    /// By action.
    pub by_action: BTreeMap<String, u64>,
    /// By route (`-` for none).
    pub by_route: BTreeMap<String, u64>,
    /// Requests carrying each entity type.
    pub by_entity: BTreeMap<String, u64>,
    /// By tenant.
    pub by_tenant: BTreeMap<String, u64>,
    /// By UTC day.
    pub by_day: BTreeMap<String, u64>,
}

impl Stats {
    /// Adds a count of `n` requests under `key` of `group` (for entities, `key` lists the types
    /// a request carried: it counts once for each).
    pub(crate) fn add(&mut self, group: Group, key: Option<String>, n: i64) {
        let n = u64::try_from(n).unwrap_or(0);
        let map = match group {
            Group::Action => {
                self.requests += n;
                &mut self.by_action
            }
            Group::Route => &mut self.by_route,
            Group::Tenant => &mut self.by_tenant,
            Group::Day => &mut self.by_day,
            Group::Entity => &mut self.by_entity,
        };
        let key = key.unwrap_or_else(|| "-".to_owned());
        if group == Group::Entity {
            for t in key.split_whitespace().filter(|t| *t != "-") {
                *map.entry(t.to_owned()).or_default() += n;
            }
        } else {
            *map.entry(key).or_default() += n;
        }
    }

    /// The counts as text, one table per dimension.
    pub fn render(&self) -> String {
        let mut out = format!("{} request(s)\n", self.requests);
        for (name, map) in [
            ("action", &self.by_action),
            ("route", &self.by_route),
            ("entity", &self.by_entity),
            ("tenant", &self.by_tenant),
            ("day", &self.by_day),
        ] {
            let _ = writeln!(out, "\nby {name}");
            for (k, n) in map {
                let _ = writeln!(out, "  {k:<24} {n}");
            }
        }
        out
    }
}
