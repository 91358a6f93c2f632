//! The built-in generators through the binary, and the demo.

mod common;

use common::*;

#[test]
fn the_trades_generator_is_deterministic_and_exact() {
    let args = [
        "execute", "--source", "generator:trades?count=50", "--query",
        "SELECT trade_id, symbol, price, quantity, price * quantity AS notional, ts FROM trades WHERE trade_id <= 3",
        "--format", "csv",
    ];
    let first = run_ok(&args);
    assert_eq!(first, run_ok(&args), "same seed, same trades");
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(lines[0], "trade_id,symbol,price,quantity,notional,ts");
    assert_eq!(lines.len(), 4);
    for (i, line) in lines[1..].iter().enumerate() {
        let cols: Vec<&str> = line.split(',').collect();
        assert_eq!(cols[0], (i + 1).to_string());
        assert_eq!(
            cols[2].split('.').nth(1).map(str::len),
            Some(4),
            "DECIMAL(18,4) price: {line}"
        );
        let expected_ts = if i == 0 {
            "2024-01-01T00:00:00".to_string()
        } else {
            format!("2024-01-01T00:00:00.{:03}", i * 10)
        };
        assert_eq!(cols[5], expected_ts);
        // notional = price × quantity exactly, computed here independently in integers.
        let price_units: i128 = cols[2].replace('.', "").parse().unwrap();
        let quantity: i128 = cols[3].parse().unwrap();
        let notional_units: i128 = cols[4].replace('.', "").parse().unwrap();
        assert_eq!(notional_units, price_units * quantity, "{line}");
    }
}

#[test]
fn the_nexmark_generator_matches_the_golden_sample_through_sql() {
    let sample = include_str!("../connectors/tests/data/nexmark/first1000_flink_json.jsonl");
    let expected: Vec<String> = sample
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event_type"] == 2)
        .take(5)
        .map(|v| {
            format!(
                "{},{},{}",
                v["bid"]["auction"], v["bid"]["bidder"], v["bid"]["price"]
            )
        })
        .collect();
    let out = run_ok(&[
        "execute", "--source", "generator:nexmark?count=1000", "--query",
        "SELECT bid['auction'] AS auction, bid['bidder'] AS bidder, bid['price'] AS price FROM nexmark WHERE event_type = 2 LIMIT 5",
        "--format", "csv",
    ]);
    let got: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(got, expected);
}

#[test]
fn the_demo_runs_without_any_service() {
    let out = velo_sql()
        .args([
            "demo",
            "--limit",
            "3",
            "--format",
            "json-lines",
            "--rate",
            "1000",
        ])
        .env("KAFKA_BROKERS", "127.0.0.1:1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["window_start"].is_string(), "{line}");
        assert!(v["trades"].as_i64().unwrap() > 0, "{line}");
        let low: f64 = v["low"].as_str().unwrap().parse().unwrap();
        let high: f64 = v["high"].as_str().unwrap().parse().unwrap();
        assert!(low <= high, "{line}");
    }
}
