//! What a market-data feed sends: Palisade's JSON bar schema (one JSON
//! object per WebSocket text message) and an adapter for Binance's public
//! kline stream, both parsed into one [`Message`].
//!
//! Parsing checks shape and types only (a field is present, a number is a
//! finite number, a timestamp is a timestamp); whether a bar's prices make
//! sense and whether it arrives in order is the
//! [`Sequencer`](crate::sequencer::Sequencer)'s business. It does no I/O.
//! The schema is documented in `docs/feeds.md`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One bar as a feed sends it, before it is checked and given a symbol id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedBar {
    pub symbol: String,
    /// Unix time of the bar's open, in seconds (as in
    /// [`palisade_backtest::Dataset`]).
    pub ts: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
    /// The feed's sequence number for this message, increasing by 1 per
    /// message, if the feed numbers its messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// The wire formats a feed may speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Palisade's JSON bar schema (`docs/feeds.md`).
    Palisade,
    /// Binance's kline stream (`<symbol>@kline_<interval>`), single or
    /// combined streams.
    Binance,
}

impl Format {
    /// The format's name, as in `--format` and `?format=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Palisade => "palisade",
            Format::Binance => "binance",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A format name that is not one of [`Format`]'s.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown feed format `{0}` (expected palisade or binance)")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(text: &str) -> Result<Format, UnknownFormat> {
        match text {
            "palisade" => Ok(Format::Palisade),
            "binance" => Ok(Format::Binance),
            _ => Err(UnknownFormat(text.to_owned())),
        }
    }
}

/// What one feed message means.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// A closed bar.
    Bar(FeedBar),
    /// The feed is alive; `ts` is its clock (unix seconds).
    Heartbeat { ts: i64 },
    /// A well-formed message that carries no bar (an open Binance kline,
    /// another Binance event); the text says which.
    Ignored(String),
}

/// Why a message could not be parsed; the message names the field and value.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Malformed {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("{field}: expected a JSON object, found {found}")]
    NotObject { field: &'static str, found: String },
    #[error("missing field `{field}`")]
    Missing { field: &'static str },
    #[error("field `{field}`: expected {expected}, found {found}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
        found: String,
    },
    #[error("field `{field}`: {problem}")]
    BadValue { field: &'static str, problem: String },
    #[error("unknown message type `{0}` (expected bar or heartbeat)")]
    UnknownType(String),
}

/// Parses one text message of a feed speaking `format`.
pub fn parse(format: Format, text: &str) -> Result<Message, Malformed> {
    let value: Value = serde_json::from_str(text).map_err(|e| Malformed::NotJson(e.to_string()))?;
    let object = as_object("message", &value)?;
    match format {
        Format::Palisade => parse_palisade(object),
        Format::Binance => parse_binance(object),
    }
}

/// A bar as Palisade's schema writes it (`"type":"bar"`, `ts` in unix seconds).
pub fn bar_json(bar: &FeedBar) -> String {
    #[derive(Serialize)]
    struct Tagged<'a> {
        r#type: &'static str,
        #[serde(flatten)]
        bar: &'a FeedBar,
    }
    let tagged = Tagged { r#type: "bar", bar };
    serde_json::to_string(&tagged).expect("a bar always serializes")
}

/// A closed bar as a Binance single-stream kline event of an
/// `interval_secs` interval (`x: true`; times in milliseconds; prices as
/// decimal strings written in the shortest form that reads back exactly).
pub fn bar_binance_json(bar: &FeedBar, interval_secs: i64) -> String {
    let open_ms = bar.ts * 1000;
    let close_ms = (bar.ts + interval_secs) * 1000 - 1;
    let event = KlineEvent {
        e: "kline",
        event_time: close_ms + 1,
        s: &bar.symbol,
        k: Kline {
            t: open_ms,
            close_time: close_ms,
            s: &bar.symbol,
            i: interval_label(interval_secs),
            o: bar.open.to_string(),
            c: bar.close.to_string(),
            h: bar.high.to_string(),
            l: bar.low.to_string(),
            v: bar.volume.to_string(),
            x: true,
        },
    };
    serde_json::to_string(&event).expect("a kline always serializes")
}

/// The part of Binance's kline event [`bar_binance_json`] writes.
#[derive(Serialize)]
struct KlineEvent<'a> {
    e: &'static str,
    #[serde(rename = "E")]
    event_time: i64,
    s: &'a str,
    k: Kline<'a>,
}

#[derive(Serialize)]
struct Kline<'a> {
    t: i64,
    #[serde(rename = "T")]
    close_time: i64,
    s: &'a str,
    i: String,
    o: String,
    c: String,
    h: String,
    l: String,
    v: String,
    x: bool,
}

/// Binance's name of an interval (`1m`, `4h`, `1d`, `1w`), or seconds
/// (`90s`) when no larger unit divides it.
fn interval_label(secs: i64) -> String {
    for (unit, size) in [("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs > 0 && secs % size == 0 {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

fn parse_palisade(object: &Map<String, Value>) -> Result<Message, Malformed> {
    let kind = string_field(object, "type")?;
    match kind {
        "bar" => Ok(Message::Bar(FeedBar {
            symbol: symbol_field(object, "symbol")?,
            ts: timestamp_field(object, "ts")?,
            open: number_field(object, "open")?,
            high: number_field(object, "high")?,
            low: number_field(object, "low")?,
            close: number_field(object, "close")?,
            volume: number_field(object, "volume")?,
            seq: seq_field(object, "seq")?,
        })),
        "heartbeat" => Ok(Message::Heartbeat {
            ts: timestamp_field(object, "ts")?,
        }),
        other => Err(Malformed::UnknownType(other.to_owned())),
    }
}

fn parse_binance(object: &Map<String, Value>) -> Result<Message, Malformed> {
    // Combined streams wrap each event: {"stream": "...", "data": {...}}.
    let event = match (object.get("stream"), object.get("data")) {
        (Some(_), Some(data)) => as_object("data", data)?,
        _ => object,
    };
    if event.contains_key("result") && event.contains_key("id") {
        return Ok(Message::Ignored("binance subscription response".to_owned()));
    }
    let kind = string_field(event, "e")?;
    if kind != "kline" {
        return Ok(Message::Ignored(format!("binance `{kind}` event")));
    }
    let kline = as_object("k", required(event, "k")?)?;
    if !bool_field(kline, "k.x", "x")? {
        return Ok(Message::Ignored(
            "binance kline not closed yet (x: false)".to_owned(),
        ));
    }
    Ok(Message::Bar(FeedBar {
        symbol: symbol_field(kline, "s").map_err(|e| prefix_k(e, "k.s"))?,
        ts: open_time_ms(kline)?.div_euclid(1000),
        open: decimal_field(kline, "k.o", "o")?,
        high: decimal_field(kline, "k.h", "h")?,
        low: decimal_field(kline, "k.l", "l")?,
        close: decimal_field(kline, "k.c", "c")?,
        volume: decimal_field(kline, "k.v", "v")?,
        seq: None,
    }))
}

/// A kline's start time (`k.t`, milliseconds).
fn open_time_ms(kline: &Map<String, Value>) -> Result<i64, Malformed> {
    let field = "k.t";
    let value = kline.get("t").ok_or(Malformed::Missing { field })?;
    value.as_i64().ok_or_else(|| Malformed::WrongType {
        field,
        expected: "an integer (milliseconds)",
        found: describe(value),
    })
}

/// Renames a missing or mistyped field of the kline object to its full path.
fn prefix_k(error: Malformed, path: &'static str) -> Malformed {
    match error {
        Malformed::Missing { .. } => Malformed::Missing { field: path },
        Malformed::WrongType { expected, found, .. } => Malformed::WrongType {
            field: path,
            expected,
            found,
        },
        Malformed::BadValue { problem, .. } => Malformed::BadValue { field: path, problem },
        other => other,
    }
}

fn required<'a>(object: &'a Map<String, Value>, field: &'static str) -> Result<&'a Value, Malformed> {
    match object.get(field) {
        None | Some(Value::Null) => Err(Malformed::Missing { field }),
        Some(value) => Ok(value),
    }
}

fn as_object<'a>(field: &'static str, value: &'a Value) -> Result<&'a Map<String, Value>, Malformed> {
    value.as_object().ok_or_else(|| Malformed::NotObject {
        field,
        found: describe(value),
    })
}

fn string_field<'a>(object: &'a Map<String, Value>, field: &'static str) -> Result<&'a str, Malformed> {
    let value = required(object, field)?;
    value.as_str().ok_or_else(|| Malformed::WrongType {
        field,
        expected: "a string",
        found: describe(value),
    })
}

fn symbol_field(object: &Map<String, Value>, field: &'static str) -> Result<String, Malformed> {
    let symbol = string_field(object, field)?;
    if symbol.is_empty() {
        return Err(Malformed::BadValue {
            field,
            problem: "symbol is empty".to_owned(),
        });
    }
    Ok(symbol.to_owned())
}

/// A JSON number (finite by construction: JSON has no NaN or infinity).
fn number_field(object: &Map<String, Value>, field: &'static str) -> Result<f64, Malformed> {
    let value = required(object, field)?;
    value.as_f64().ok_or_else(|| Malformed::WrongType {
        field,
        expected: "a number",
        found: describe(value),
    })
}

/// A decimal string (Binance's prices), or a JSON number; finite.
fn decimal_field(
    object: &Map<String, Value>,
    path: &'static str,
    key: &'static str,
) -> Result<f64, Malformed> {
    let value = object.get(key).ok_or(Malformed::Missing { field: path })?;
    let number = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(text) => text.trim().parse::<f64>().ok(),
        _ => {
            return Err(Malformed::WrongType {
                field: path,
                expected: "a decimal string",
                found: describe(value),
            })
        }
    };
    match number {
        Some(n) if n.is_finite() => Ok(n),
        _ => Err(Malformed::BadValue {
            field: path,
            problem: format!("{} is not a finite decimal number", describe(value)),
        }),
    }
}

fn bool_field(object: &Map<String, Value>, path: &'static str, key: &'static str) -> Result<bool, Malformed> {
    let value = object.get(key).ok_or(Malformed::Missing { field: path })?;
    value.as_bool().ok_or_else(|| Malformed::WrongType {
        field: path,
        expected: "true or false",
        found: describe(value),
    })
}

/// Unix seconds as an integer, or a string `parse_timestamp` reads (RFC
/// 3339, `YYYY-MM-DD`, digits).
fn timestamp_field(object: &Map<String, Value>, field: &'static str) -> Result<i64, Malformed> {
    let value = required(object, field)?;
    match value {
        Value::Number(n) => n.as_i64().ok_or_else(|| Malformed::WrongType {
            field,
            expected: "integer unix seconds or an RFC 3339 string",
            found: describe(value),
        }),
        Value::String(text) => {
            palisade_backtest::data::parse_timestamp(text).map_err(|problem| Malformed::BadValue {
                field,
                problem: problem.to_string(),
            })
        }
        _ => Err(Malformed::WrongType {
            field,
            expected: "integer unix seconds or an RFC 3339 string",
            found: describe(value),
        }),
    }
}

/// An optional non-negative integer (`null` counts as absent).
fn seq_field(object: &Map<String, Value>, field: &'static str) -> Result<Option<u64>, Malformed> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value.as_u64().map(Some).ok_or_else(|| Malformed::WrongType {
            field,
            expected: "a non-negative integer",
            found: describe(value),
        }),
    }
}

/// A JSON value as an error message shows it: its kind and, when short, its text.
fn describe(value: &Value) -> String {
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => return "an array".to_owned(),
        Value::Object(_) => return "an object".to_owned(),
    };
    let text = value.to_string();
    if text.len() <= 40 {
        format!("{kind} {text}")
    } else {
        format!("{kind} {}…", &text[..text.floor_char_boundary(40)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(symbol: &str, ts: i64, seq: Option<u64>) -> FeedBar {
        FeedBar {
            symbol: symbol.to_owned(),
            ts,
            open: 42283.58,
            high: 42290.0,
            low: 42280.0,
            close: 42284.0,
            volume: 12.5,
            seq,
        }
    }

    /// Parses `text` and checks the result, printing the input when it differs.
    fn check(format: Format, text: &str, expected: Result<Message, &str>) {
        let got = parse(format, text).map_err(|e| e.to_string());
        let expected = expected.map_err(str::to_owned);
        assert_eq!(got, expected, "parsing {format} message {text}");
    }

    #[test]
    fn palisade_bars_and_heartbeats_parse() {
        let p = Format::Palisade;
        let full = r#"{"type":"bar","symbol":"BTCUSDT","ts":1704067200,"open":42283.58,"high":42290,"low":42280,"close":42284,"volume":12.5,"seq":17}"#;
        check(p, full, Ok(Message::Bar(bar("BTCUSDT", 1704067200, Some(17)))));
        let rfc = r#"{"type":"bar","symbol":"BTCUSDT","ts":"2024-01-01T00:00:00Z","open":42283.58,"high":42290,"low":42280,"close":42284,"volume":12.5,"extra":[1]}"#;
        check(p, rfc, Ok(Message::Bar(bar("BTCUSDT", 1704067200, None))));
        let null_seq = r#"{"type":"bar","symbol":"BTCUSDT","ts":1704067200,"open":42283.58,"high":42290,"low":42280,"close":42284,"volume":12.5,"seq":null}"#;
        check(p, null_seq, Ok(Message::Bar(bar("BTCUSDT", 1704067200, None))));
        check(
            p,
            r#"{"type":"heartbeat","ts":5}"#,
            Ok(Message::Heartbeat { ts: 5 }),
        );
        check(
            p,
            r#"{"type":"heartbeat","ts":"1970-01-01T00:01:00+00:00"}"#,
            Ok(Message::Heartbeat { ts: 60 }),
        );
    }

    #[test]
    fn malformed_palisade_messages_name_field_and_value() {
        let p = Format::Palisade;
        let cases = [
            (
                r#"{"type":"bar","symbol":"X","ts":1,"open":1,"high":1,"low":1,"close":1}"#,
                "missing field `volume`",
            ),
            (
                r#"{"type":"bar","symbol":"X","ts":1,"open":"NaN","high":1,"low":1,"close":1,"volume":1}"#,
                "field `open`: expected a number, found string \"NaN\"",
            ),
            (
                r#"{"type":"bar","symbol":"X","ts":1,"open":true,"high":1,"low":1,"close":1,"volume":1}"#,
                "field `open`: expected a number, found boolean true",
            ),
            (
                r#"{"type":"bar","symbol":"X","ts":1.5,"open":1,"high":1,"low":1,"close":1,"volume":1}"#,
                "field `ts`: expected integer unix seconds or an RFC 3339 string, found number 1.5",
            ),
            (
                r#"{"type":"bar","symbol":"X","ts":"yesterday","open":1,"high":1,"low":1,"close":1,"volume":1}"#,
                "field `ts`: timestamp is not unix seconds, RFC 3339 or YYYY-MM-DD: `yesterday`",
            ),
            (
                r#"{"type":"bar","symbol":"","ts":1,"open":1,"high":1,"low":1,"close":1,"volume":1}"#,
                "field `symbol`: symbol is empty",
            ),
            (
                r#"{"type":"bar","symbol":7,"ts":1,"open":1,"high":1,"low":1,"close":1,"volume":1}"#,
                "field `symbol`: expected a string, found number 7",
            ),
            (
                r#"{"type":"bar","symbol":"X","ts":1,"open":1,"high":1,"low":1,"close":1,"volume":1,"seq":-1}"#,
                "field `seq`: expected a non-negative integer, found number -1",
            ),
            (
                r#"{"type":"trade","symbol":"X"}"#,
                "unknown message type `trade` (expected bar or heartbeat)",
            ),
            (r#"{"symbol":"X"}"#, "missing field `type`"),
            (r#"{"type":"heartbeat"}"#, "missing field `ts`"),
            (r#"[1,2]"#, "message: expected a JSON object, found an array"),
        ];
        for (text, error) in cases {
            check(p, text, Err(error));
        }
        let not_json = parse(p, "{\"type\":\"bar\",").unwrap_err();
        assert!(matches!(not_json, Malformed::NotJson(_)), "{not_json}");
        let nan_literal = parse(p, r#"{"type":"bar","open":NaN}"#).unwrap_err();
        assert!(matches!(nan_literal, Malformed::NotJson(_)), "{nan_literal}");
    }

    const KLINE: &str = r#"{"e":"kline","E":1704067260001,"s":"BTCUSDT","k":{"t":1704067200000,"T":1704067259999,"s":"BTCUSDT","i":"1m","f":100,"L":200,"o":"42283.58","c":"42284.00","h":"42290.00","l":"42280.00","v":"12.5","n":31,"x":true,"q":"1.0","V":"5","Q":"0.5","B":"0"}}"#;

    #[test]
    fn binance_closed_klines_are_bars_open_ones_ignored() {
        let b = Format::Binance;
        check(b, KLINE, Ok(Message::Bar(bar("BTCUSDT", 1704067200, None))));
        let combined = format!(r#"{{"stream":"btcusdt@kline_1m","data":{KLINE}}}"#);
        check(b, &combined, Ok(Message::Bar(bar("BTCUSDT", 1704067200, None))));
        let open = KLINE.replace(r#""x":true"#, r#""x":false"#);
        check(
            b,
            &open,
            Ok(Message::Ignored(
                "binance kline not closed yet (x: false)".to_owned(),
            )),
        );
        check(
            b,
            r#"{"e":"trade","s":"BTCUSDT"}"#,
            Ok(Message::Ignored("binance `trade` event".to_owned())),
        );
        check(
            b,
            r#"{"result":null,"id":1}"#,
            Ok(Message::Ignored("binance subscription response".to_owned())),
        );
    }

    #[test]
    fn malformed_binance_klines_name_field_and_value() {
        let b = Format::Binance;
        let cases = [
            (
                KLINE.replace(r#""o":"42283.58""#, r#""o":"NaN""#),
                "field `k.o`: string \"NaN\" is not a finite decimal number",
            ),
            (
                KLINE.replace(r#""h":"42290.00""#, r#""h":"abc""#),
                "field `k.h`: string \"abc\" is not a finite decimal number",
            ),
            (
                KLINE.replace(r#""v":"12.5""#, r#""v":[1]"#),
                "field `k.v`: expected a decimal string, found an array",
            ),
            (KLINE.replace(r#""c":"42284.00","#, ""), "missing field `k.c`"),
            (
                KLINE.replace(r#""t":1704067200000"#, r#""t":"soon""#),
                "field `k.t`: expected an integer (milliseconds), found string \"soon\"",
            ),
            (
                KLINE.replace(r#""x":true"#, r#""x":"yes""#),
                "field `k.x`: expected true or false, found string \"yes\"",
            ),
            (
                KLINE.replace(r#""s":"BTCUSDT","i""#, r#""i""#),
                "missing field `k.s`",
            ),
            (r#"{"E":1,"k":{}}"#.to_owned(), "missing field `e`"),
            (
                r#"{"e":"kline","k":5}"#.to_owned(),
                "k: expected a JSON object, found number 5",
            ),
            (
                r#"{"stream":"x","data":"y"}"#.to_owned(),
                "data: expected a JSON object, found string \"y\"",
            ),
        ];
        for (text, error) in cases {
            check(b, &text, Err(error));
        }
    }

    #[test]
    fn written_bars_read_back() {
        let original = bar("ETHUSDT", 1704067260, Some(3));
        let text = bar_json(&original);
        assert_eq!(parse(Format::Palisade, &text), Ok(Message::Bar(original.clone())));
        let odd = FeedBar {
            open: 0.1 + 0.2,
            volume: 1e-7,
            ..original.clone()
        };
        let text = bar_binance_json(&odd, 60);
        let expected = FeedBar { seq: None, ..odd };
        assert_eq!(
            parse(Format::Binance, &text),
            Ok(Message::Bar(expected)),
            "{text}"
        );
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["k"]["i"], "1m");
        assert_eq!(value["k"]["T"], 1_704_067_260_i64 * 1000 + 59_999);
    }

    #[test]
    fn interval_labels_use_the_largest_unit() {
        for (secs, label) in [
            (1, "1s"),
            (90, "90s"),
            (60, "1m"),
            (900, "15m"),
            (14_400, "4h"),
            (86_400, "1d"),
            (604_800, "1w"),
        ] {
            assert_eq!(interval_label(secs), label);
        }
    }

    #[test]
    fn formats_read_and_write_their_names() {
        for format in [Format::Palisade, Format::Binance] {
            assert_eq!(format.to_string().parse::<Format>(), Ok(format));
        }
        let err = "kraken".parse::<Format>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown feed format `kraken` (expected palisade or binance)"
        );
    }
}
